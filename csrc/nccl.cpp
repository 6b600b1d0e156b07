// NCCL for data parallelism (src/dist/nccl.rs), built and linked only with the `cuda` feature (see
// build.rs): a communicator per rank and an in-place float32 sum on libtorch's current stream of the
// tensor's device. Every function catches every C++ exception and writes its message into `err` (a
// buffer of `len` bytes), returning nonzero; an NCCL error is thrown with NCCL's own message.
//
// NCCL's C API (stable since NCCL 2.0) is declared here rather than by including nccl.h: nccl.h pulls in
// cuda_fp16.h, which needs CCCL's <nv/target>, and the CUDA wheels beside torch ship no CCCL. Only what
// this file calls is declared, with nccl.h's types and values (NCCL 2.28 of the torch wheel set).
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cstring>
#include <stdexcept>
#include <string>
#include "shim.h"

extern "C" {
typedef struct ncclComm* ncclComm_t;
typedef struct {
  char internal[128];  // NCCL_UNIQUE_ID_BYTES
} ncclUniqueId;
typedef enum { ncclSuccess = 0 } ncclResult_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
typedef enum { ncclFloat32 = 7 } ncclDataType_t;
ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank);
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
const char* ncclGetErrorString(ncclResult_t result);
}

namespace {
void check(const char* what, ncclResult_t r) {
  if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(r));
}
}  // namespace

static_assert(sizeof(ncclUniqueId) == 128, "UNIQUE_ID_BYTES is 128 in src/dist/nccl.rs");

// NCCL's unique id (128 bytes) into `id`: made once by rank 0 and shared with every rank.
extern "C" int s3pet_nccl_unique_id(char* id, char* err, size_t len) {
  S3PET_TRY({
    ncclUniqueId u;
    check("ncclGetUniqueId", ncclGetUniqueId(&u));
    std::memcpy(id, u.internal, sizeof(u.internal));
  })
}

// Joins the communicator of `nranks` ranks named by `id` as `rank`, on CUDA device `device`.
extern "C" int s3pet_nccl_init(void** comm, int nranks, const char* id, int rank, int device, char* err,
                               size_t len) {
  S3PET_TRY({
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    ncclUniqueId u;
    std::memcpy(u.internal, id, sizeof(u.internal));
    ncclComm_t c = nullptr;
    check("ncclCommInitRank", ncclCommInitRank(&c, nranks, u, rank));
    *comm = c;
  })
}

// Sums `count` float32 values at device pointer `data` over every rank, in place, queued on libtorch's
// current stream of `device`.
extern "C" int s3pet_nccl_all_reduce_sum_f32(void* comm, void* data, size_t count, int device, char* err,
                                             size_t len) {
  S3PET_TRY({
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    cudaStream_t s = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    check("ncclAllReduce", ncclAllReduce(data, data, count, ncclFloat32, ncclSum, static_cast<ncclComm_t>(comm), s));
  })
}

extern "C" void s3pet_nccl_free(void* comm) {
  try {
    if (comm != nullptr) ncclCommDestroy(static_cast<ncclComm_t>(comm));
  } catch (...) {
  }
}
