//! Peak GPU memory of libtorch's CUDA caching allocator (csrc/cuda_mem.cpp, `cuda` feature only): the
//! same figure as `torch.cuda.max_memory_allocated`. Without the feature, or on the CPU, there is none.
use tch::Device;

#[cfg(feature = "cuda")]
mod ffi {
    extern "C" {
        pub fn s3pet_cuda_peak(device: i32, reserved: i32) -> i64;
        pub fn s3pet_cuda_reset_peak(device: i32) -> i32;
    }
}

/// Frees the allocator's cached blocks and restarts its peak counters (no-op off CUDA).
pub fn reset_peak(device: Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(i) = device {
        // SAFETY: plain C calls into libtorch's allocator; they catch every C++ exception.
        unsafe {
            ffi::s3pet_cuda_reset_peak(i as i32);
        }
    }
    let _ = device;
}

/// (peak bytes allocated to tensors, peak bytes reserved from the driver) since the last reset.
pub fn peak(device: Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(i) = device {
        // SAFETY: as above.
        let (a, r) = unsafe { (ffi::s3pet_cuda_peak(i as i32, 0), ffi::s3pet_cuda_peak(i as i32, 1)) };
        return (a >= 0 && r >= 0).then_some((a as u64, r as u64));
    }
    let _ = device;
    None
}
