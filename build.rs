//! Makes the binary find libtorch without LD_LIBRARY_PATH (an rpath to `$LIBTORCH/lib`), and with the
//! `cuda` feature force-links libtorch_cuda: nothing references it directly, so `--as-needed` would
//! drop it and CUDA would silently report unavailable. Also compiles csrc/cuda_mem.cpp there (peak
//! statistics of libtorch's CUDA allocator, which tch does not expose) and csrc/cuda_graph.cpp (CUDA
//! graphs of the search step, against libtorch's and the CUDA runtime's headers) and csrc/nccl.cpp (NCCL
//! for data parallelism, linked to the NCCL wheel beside torch: nvidia/nccl/lib).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/cuda_mem.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=csrc/nccl.cpp");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        #[cfg(feature = "cuda")]
        cuda_mem(&lib);
        #[cfg(feature = "cuda")]
        cuda_graph(&lib);
        #[cfg(feature = "cuda")]
        nccl(&lib);
    }
}

/// A C++17 shim of `file` against libtorch's headers (`LIBTORCH/include`, the C++11 ABI libtorch is built
/// with), for one of the functions below to add what else it needs and compile.
#[cfg(feature = "cuda")]
fn shim(lib: &std::path::Path, file: &str) -> cc::Build {
    let torch = lib.parent().expect("LIBTORCH/lib has a parent");
    let mut build = cc::Build::new();
    build.cpp(true).std("c++17").file(file).include(torch.join("include"));
    build.define("_GLIBCXX_USE_CXX11_ABI", "1").warnings(false);
    build
}

/// The directory with cuda_runtime_api.h: the CUDA wheel's (beside torch in site-packages), $CUDA_HOME's
/// or /usr/local/cuda's.
#[cfg(feature = "cuda")]
fn cuda_include(lib: &std::path::Path) -> PathBuf {
    let torch = lib.parent().expect("LIBTORCH/lib has a parent");
    let mut dirs = vec![torch.join("../nvidia/cu13/include"), torch.join("../nvidia/cuda_runtime/include")];
    if let Some(h) = std::env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(h).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    dirs.into_iter().find(|d| d.join("cuda_runtime_api.h").is_file()).expect(
        "cuda_runtime_api.h not found (the nvidia CUDA wheels beside torch, $CUDA_HOME or /usr/local/cuda)",
    )
}

/// The CUDA graph shim (at::cuda::CUDAGraph and c10's stream functions).
#[cfg(feature = "cuda")]
fn cuda_graph(lib: &std::path::Path) {
    let torch = lib.parent().expect("LIBTORCH/lib has a parent");
    shim(lib, "csrc/cuda_graph.cpp")
        .include(torch.join("include/torch/csrc/api/include"))
        .include(cuda_include(lib))
        .compile("s3pet_cuda_graph");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
}

/// The allocator shim, against libtorch's c10 headers only (no CUDA header: the CUDA allocator is
/// reached through c10's device-generic interface).
#[cfg(feature = "cuda")]
fn cuda_mem(lib: &std::path::Path) {
    shim(lib, "csrc/cuda_mem.cpp").compile("s3pet_cuda_mem");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The NCCL shim (src/dist/nccl.rs): libnccl.so.2 of the NCCL wheel beside torch (the one libtorch_cuda
/// itself loads), else $NCCL_HOME/lib; libtorch's c10 for its current stream.
#[cfg(feature = "cuda")]
fn nccl(lib: &std::path::Path) {
    println!("cargo:rerun-if-env-changed=NCCL_HOME");
    let torch = lib.parent().expect("LIBTORCH/lib has a parent");
    let mut homes = vec![torch.join("../nvidia/nccl")];
    if let Some(h) = std::env::var_os("NCCL_HOME") {
        homes.insert(0, PathBuf::from(h));
    }
    let home = homes.into_iter().find(|h| h.join("lib/libnccl.so.2").is_file()).expect(
        "libnccl.so.2 not found (the nvidia-nccl wheel beside torch: site-packages/nvidia/nccl, or $NCCL_HOME)",
    );
    let home = home.canonicalize().unwrap_or(home);
    shim(lib, "csrc/nccl.cpp").include(cuda_include(lib)).compile("s3pet_nccl");
    let nccl_lib = home.join("lib");
    println!("cargo:rustc-link-search=native={}", nccl_lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", nccl_lib.display());
    // the wheel ships libnccl.so.2 only (no libnccl.so for -lnccl): name the file (`-l:libnccl.so.2`)
    println!("cargo:rustc-link-lib=dylib:+verbatim=libnccl.so.2");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-lib=dylib=c10");
}
