// Python bindings of dense._C. Each op registers its CPU (and, when built, CUDA) entry points here.
#include <torch/extension.h>

namespace dense {

bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace dense

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dense custom operators (CPU kernels; CUDA kernels when built with FORCE_CUDA=1 or a visible GPU)";
  m.def("built_with_cuda", &dense::built_with_cuda, "True when the CUDA kernels were compiled in");
}
