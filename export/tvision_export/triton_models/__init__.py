"""Model code the exporter copies into a Triton repository (python backend).

Every model here loads its shared code the same two ways:

- ``from . import contract``. In a repository, that is the ``contract.py`` the exporter
  copies beside each ``model.py``: Triton imports the file as ``<version>.model``, so ``.``
  is the version directory. In this package, it is ``tvision_export.contract``, bound
  below, so the benchmark, ``tvision fidelity`` and the tests import the same files.
- ``import triton_python_backend_utils as pb_utils`` in ``initialize``: Triton's python
  backend provides that module, and only inside Triton, so every model imports anywhere.
"""

from tvision_export import contract as contract
