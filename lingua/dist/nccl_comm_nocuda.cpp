// Built only without the CUDA path.
#include "lingua/dist/nccl_comm.h"

namespace lingua {

bool nccl_built() { return false; }

std::unique_ptr<Communicator> make_nccl_comm(Communicator&) {
  fail("this lingua was built without CUDA, so without NCCL: multi-GPU training needs the CUDA build");
}

}  // namespace lingua
