// CUDA graphs of libtorch (at::cuda::CUDAGraph) for the search step (tch exposes none), built and linked
// only with the `cuda` feature (see build.rs). Every function catches every C++ exception and writes its
// message into `err` (a buffer of `len` bytes), returning nonzero.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include "shim.h"

// A new graph, written to *out.
extern "C" int s3pet_graph_new(void** out, char* err, size_t len) {
  S3PET_TRY(*out = new at::cuda::CUDAGraph())
}

extern "C" void s3pet_graph_free(void* g) {
  try {
    delete static_cast<at::cuda::CUDAGraph*>(g);
  } catch (...) {
  }
}

// Makes a stream of libtorch's pool current on `device` once the device is idle: a capture needs a
// stream other than the default one, and the work before (on the default stream) must be done.
extern "C" int s3pet_side_stream_enter(int device, char* err, size_t len) {
  S3PET_TRY({
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    c10::cuda::device_synchronize();
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
  })
}

// Waits for the device, then makes the default stream current again.
extern "C" int s3pet_side_stream_exit(int device, char* err, size_t len) {
  S3PET_TRY({
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    c10::cuda::device_synchronize();
    c10::cuda::setCurrentCUDAStream(c10::cuda::getDefaultCUDAStream(static_cast<c10::DeviceIndex>(device)));
  })
}

// Starts capturing the current stream's work into `g`: in the memory pool of the graph `share` when that
// is not null (the two must never run at once, and what one graph leaves in its freed blocks is not read
// after the other has run), else in a pool of its own.
extern "C" int s3pet_graph_begin(void* g, void* share, char* err, size_t len) {
  S3PET_TRY({
    auto* graph = static_cast<at::cuda::CUDAGraph*>(g);
    if (share != nullptr) {
      graph->capture_begin(static_cast<at::cuda::CUDAGraph*>(share)->pool());
    } else {
      graph->capture_begin();
    }
  })
}

// Ends the capture and instantiates the graph (fails when something in the capture was not allowed).
extern "C" int s3pet_graph_end(void* g, char* err, size_t len) {
  S3PET_TRY(static_cast<at::cuda::CUDAGraph*>(g)->capture_end())
}

// Launches the captured work on the current stream (random number offsets advanced as captured).
extern "C" int s3pet_graph_replay(void* g, char* err, size_t len) {
  S3PET_TRY(static_cast<at::cuda::CUDAGraph*>(g)->replay())
}
