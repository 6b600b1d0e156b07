//! The GPU engine: NCCL (the library PyTorch's DDP reduces with), through csrc/nccl.cpp (`cuda`
//! feature): rank 0 makes NCCL's unique id, the launcher's TCP star carries it to every rank, each rank
//! joins the communicator on `cuda:LOCAL_RANK`, and an all-reduce runs in place on the tensor's device
//! memory, on libtorch's current stream of that device (ordered after the kernels that wrote it, nothing
//! waits on the host). Without the feature, [`NcclReducer::new`] is an error that says so.
use super::tcp::TcpStar;
use super::Reducer;
use crate::error::{Error, Result};
use tch::Tensor;

#[cfg(feature = "cuda")]
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};
    extern "C" {
        pub fn s3pet_nccl_unique_id(id: *mut c_char, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_nccl_init(
            comm: *mut *mut c_void,
            nranks: c_int,
            id: *const c_char,
            rank: c_int,
            device: c_int,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn s3pet_nccl_all_reduce_sum_f32(
            comm: *mut c_void,
            data: *mut c_void,
            count: usize,
            device: c_int,
            err: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn s3pet_nccl_free(comm: *mut c_void);
    }
}

/// NCCL's unique id (NCCL_UNIQUE_ID_BYTES in nccl.h).
pub const UNIQUE_ID_BYTES: usize = 128;

pub struct NcclReducer {
    #[cfg(feature = "cuda")]
    comm: std::sync::Mutex<usize>,
    #[cfg(feature = "cuda")]
    device: usize,
    #[cfg(feature = "cuda")]
    _star: TcpStar,
}

#[cfg(feature = "cuda")]
fn call(what: &str, f: impl FnOnce(*mut std::os::raw::c_char, usize) -> i32) -> Result<()> {
    crate::cuda_graph::shim_call(&format!("distributed: NCCL {what}"), f)
}

impl NcclReducer {
    /// Joins the NCCL communicator of `size` ranks as `rank` on `cuda:device`; the unique id travels over
    /// `star` (already connected).
    #[cfg(feature = "cuda")]
    pub fn new(star: TcpStar, rank: usize, size: usize, device: usize) -> Result<Self> {
        let mut id = [0u8; UNIQUE_ID_BYTES];
        if rank == 0 {
            // SAFETY: `id` holds NCCL_UNIQUE_ID_BYTES bytes; the shim catches every exception.
            call("unique id", |e, l| unsafe { ffi::s3pet_nccl_unique_id(id.as_mut_ptr().cast(), e, l) })?;
        }
        star.broadcast(&mut id)?;
        let mut comm: *mut std::os::raw::c_void = std::ptr::null_mut();
        let (n, r, d) = (size as i32, rank as i32, device as i32);
        // SAFETY: the shim writes a valid communicator on success; `id` outlives the call.
        call("init", |e, l| unsafe { ffi::s3pet_nccl_init(&mut comm, n, id.as_ptr().cast(), r, d, e, l) })?;
        Ok(NcclReducer { comm: std::sync::Mutex::new(comm as usize), device, _star: star })
    }

    #[cfg(not(feature = "cuda"))]
    pub fn new(_star: TcpStar, _rank: usize, _size: usize, _device: usize) -> Result<Self> {
        Err(Error::config(
            "--backend",
            "nccl needs a build with --features cuda (and GPUs); use --backend tcp on the CPU",
        ))
    }
}

impl Reducer for NcclReducer {
    #[cfg(feature = "cuda")]
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        if t.device() != tch::Device::Cuda(self.device) || t.kind() != tch::Kind::Float || !t.is_contiguous()
        {
            return Err(Error::Msg(format!(
                "distributed: NCCL reduces contiguous float32 tensors on cuda:{}, got {:?} on {:?}",
                self.device,
                t.kind(),
                t.device()
            )));
        }
        let comm =
            *self.comm.lock().map_err(|_| Error::Msg("distributed: poisoned NCCL communicator".into()))?;
        let (ptr, n, d) = (t.data_ptr(), t.numel(), self.device as i32);
        // SAFETY: `ptr` is `n` float32 values of device memory on `cuda:d` that `t` keeps alive; the
        // reduction is queued on libtorch's current stream, after the kernels that wrote them.
        call("all-reduce", |e, l| unsafe {
            ffi::s3pet_nccl_all_reduce_sum_f32(comm as *mut _, ptr, n, d, e, l)
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn all_reduce_sum(&self, _t: &Tensor) -> Result<()> {
        Err(Error::Msg("distributed: NCCL needs a build with --features cuda".into()))
    }

    fn name(&self) -> &'static str {
        "nccl"
    }
}

#[cfg(feature = "cuda")]
impl Drop for NcclReducer {
    fn drop(&mut self) {
        if let Ok(c) = self.comm.lock() {
            // SAFETY: the communicator was made by s3pet_nccl_init and is freed once.
            unsafe { ffi::s3pet_nccl_free(*c as *mut _) };
        }
    }
}
