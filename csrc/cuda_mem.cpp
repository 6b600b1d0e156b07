// Peak-memory statistics of libtorch's CUDA caching allocator, for `s3pet bench` on the GPU
// (tch exposes none). Built and linked only with the `cuda` feature (see build.rs).
// Through c10's device-generic allocator interface, so that no CUDA header is needed.
#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

namespace {
constexpr size_t kAggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
c10::DeviceAllocator* cuda() { return c10::getDeviceAllocator(c10::DeviceType::CUDA); }
}

// Peak bytes since the last reset: allocated to tensors (`reserved` 0) or held from the driver, allocated
// + cached (`reserved` 1); -1 if the device has no stats.
extern "C" int64_t s3pet_cuda_peak(int device, int reserved) {
  try {
    auto s = cuda()->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return (reserved ? s.reserved_bytes : s.allocated_bytes)[kAggregate].peak;
  } catch (...) {
    return -1;
  }
}

// Frees cached blocks and restarts the peak counters; 0 on success.
extern "C" int s3pet_cuda_reset_peak(int device) {
  try {
    cuda()->emptyCache();
    cuda()->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}
