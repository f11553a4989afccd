#pragma once
// NcclComm: tensor collectives on CUDA tensors over NCCL, queued on its own communication stream
// (see comm.h): each call first makes that stream wait for the library stream's work so far, and
// wait_all() makes the library stream wait for the calls queued so far. Capturable in a CUDA graph.
// Host collectives go to the host communicator it was built with (which also broadcasts NCCL's
// unique id to bootstrap it).
#include <memory>

#include "lingua/dist/comm.h"

namespace lingua {

// Whether NCCL was built in (with the CUDA path).
bool nccl_built();

// Over the same ranks as `host` (which must outlive it), on the current CUDA device.
std::unique_ptr<Communicator> make_nccl_comm(Communicator& host);

}  // namespace lingua
