//! CUDA graphs of libtorch (csrc/cuda_graph.cpp, `cuda` feature only): capture a step's device work
//! once, replay it with new inputs written into the captured tensors. Without the feature every
//! constructor is an error that says so.
use crate::error::{Error, Result};

#[cfg(feature = "cuda")]
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};
    extern "C" {
        pub fn s3pet_graph_new(out: *mut *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_graph_free(g: *mut c_void);
        pub fn s3pet_graph_begin(g: *mut c_void, share: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_graph_end(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_graph_replay(g: *mut c_void, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_side_stream_enter(device: c_int, err: *mut c_char, len: usize) -> c_int;
        pub fn s3pet_side_stream_exit(device: c_int, err: *mut c_char, len: usize) -> c_int;
    }
}

/// Runs a call of a C++ shim (csrc/) with an error buffer; on failure its message after `what`.
#[cfg(feature = "cuda")]
pub(crate) fn shim_call(what: &str, f: impl FnOnce(*mut std::os::raw::c_char, usize) -> i32) -> Result<()> {
    let mut buf = vec![0u8; 1024];
    if f(buf.as_mut_ptr() as *mut std::os::raw::c_char, buf.len()) == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Err(Error::Msg(format!("{what}: {}", String::from_utf8_lossy(&buf[..end]).trim())))
}

#[cfg(feature = "cuda")]
fn call(what: &str, f: impl FnOnce(*mut std::os::raw::c_char, usize) -> i32) -> Result<()> {
    shim_call(&format!("CUDA graph {what}"), f)
}

#[cfg(not(feature = "cuda"))]
fn unavailable<T>() -> Result<T> {
    Err(Error::Msg("CUDA graphs need a build with --features cuda".into()))
}

/// Whether this build can capture CUDA graphs.
pub fn supported() -> bool {
    cfg!(feature = "cuda")
}

/// One captured graph (in its own memory pool, or in another graph's: see [`CudaGraph::begin`]).
pub struct CudaGraph {
    #[cfg(feature = "cuda")]
    ptr: *mut std::os::raw::c_void,
}

impl CudaGraph {
    pub fn new() -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            let mut ptr = std::ptr::null_mut();
            // SAFETY: the shim writes a valid graph pointer on success and catches every exception.
            call("create", |e, l| unsafe { ffi::s3pet_graph_new(&mut ptr, e, l) })?;
            Ok(CudaGraph { ptr })
        }
        #[cfg(not(feature = "cuda"))]
        unavailable()
    }

    /// Starts capturing the current stream (a side stream: see [`SideStream`]), into the memory pool of
    /// `share_pool_of` when given: graphs that share a pool must never run at once, and a graph's
    /// outputs are read before another graph of the pool runs (its freed blocks are the other's too).
    pub fn begin(&mut self, share_pool_of: Option<&CudaGraph>) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let share = share_pool_of.map_or(std::ptr::null_mut(), |g| g.ptr);
            // SAFETY: `ptr` is a live graph of this wrapper, `share` null or another live graph.
            call("capture begin", |e, l| unsafe { ffi::s3pet_graph_begin(self.ptr, share, e, l) })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = share_pool_of;
            unavailable()
        }
    }

    /// Ends the capture; an error when the captured work was not capturable (a host read, a blocking copy).
    pub fn end(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        // SAFETY: as above.
        return call("capture end", |e, l| unsafe { ffi::s3pet_graph_end(self.ptr, e, l) });
        #[cfg(not(feature = "cuda"))]
        unavailable()
    }

    pub fn replay(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        // SAFETY: as above.
        return call("replay", |e, l| unsafe { ffi::s3pet_graph_replay(self.ptr, e, l) });
        #[cfg(not(feature = "cuda"))]
        unavailable()
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        // SAFETY: `ptr` came from s3pet_graph_new and is freed once.
        unsafe {
            ffi::s3pet_graph_free(self.ptr)
        }
    }
}

/// While alive, libtorch's current stream on `device` is a side stream (captures need one); the device
/// is synchronised on entry and exit.
pub struct SideStream {
    #[cfg(feature = "cuda")]
    device: i32,
}

impl SideStream {
    pub fn enter(device: tch::Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        {
            let tch::Device::Cuda(i) = device else {
                return Err(Error::Msg("CUDA graphs need a CUDA device".into()));
            };
            // SAFETY: plain calls into c10; the shim catches every exception.
            call("side stream", |e, l| unsafe { ffi::s3pet_side_stream_enter(i as i32, e, l) })?;
            Ok(SideStream { device: i as i32 })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = device;
            unavailable()
        }
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        #[cfg(feature = "cuda")]
        // SAFETY: as above.
        if let Err(e) =
            call("side stream exit", |e, l| unsafe { ffi::s3pet_side_stream_exit(self.device, e, l) })
        {
            tracing::warn!("{e}");
        }
    }
}
