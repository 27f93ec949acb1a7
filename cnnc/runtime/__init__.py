"""Running a lowered network: the lowering (:mod:`.lower`: schedule, fusions, buffers), the
executor of a plan (:mod:`.executor`), the :class:`~cnnc.runtime.network.Network` API with its
flat parameters (:mod:`.network`), the optimizers (:mod:`.optim`) and data parallelism over MPI
(:mod:`.distributed`)."""
# the kernel package first: it sets the variables OpenBLAS and Numba read when NumPy and Numba
# load (cnnc.kernels.environment)
from .. import kernels  # noqa: F401
