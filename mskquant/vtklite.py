"""The VTK classes MSKQuant uses, each imported from its own VTK module.

``import vtk`` loads every VTK module (about half a second at every start of the
``mskquant`` command); the library needs only these. Use ``from . import vtklite as vtk``
and ``vtk.vtkImageData()`` as with the full package. The OpenGL and FreeType back-ends
are imported too: they register the factory overrides that off-screen charts and text
rendering need (``import vtk`` did that as a side effect).
"""

# ruff: noqa: F401
from vtkmodules import vtkRenderingContextOpenGL2, vtkRenderingFreeType, vtkRenderingOpenGL2
from vtkmodules.util import numpy_support
from vtkmodules.vtkChartsCore import vtkAxis, vtkChart, vtkChartXY
from vtkmodules.vtkCommonCore import (VTK_UNSIGNED_CHAR, vtkCollection, vtkDoubleArray, vtkIntArray,
                                      vtkStringArray)
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkTable
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkCommonMisc import vtkErrorCode
from vtkmodules.vtkIOImage import vtkPNGReader, vtkPNGWriter
from vtkmodules.vtkRenderingCore import (vtkColorTransferFunction, vtkRenderWindow, vtkTextProperty,
                                         vtkTextRenderer, vtkWindowToImageFilter)
from vtkmodules.vtkViewsContext2D import vtkContextView
# knee morphometry: iso-surfaces, smoothing, normals, areas and volumes, .vtp files
from vtkmodules.vtkCommonCore import vtkFloatArray, vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkFiltersCore import (vtkFlyingEdges3D, vtkMassProperties, vtkPolyDataNormals,
                                       vtkWindowedSincPolyDataFilter)
from vtkmodules.vtkIOXML import vtkXMLPolyDataReader, vtkXMLPolyDataWriter
