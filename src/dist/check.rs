//! `s3pet dist-check`: one all-reduce of a known tensor on this rank's device, checked against its sum
//! in closed form: rank r contributes (r + 1) (i + 1) at index i, so every rank must receive
//! W (W + 1) / 2 (i + 1).
use crate::error::{Error, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Values in the checked tensor.
pub const CHECK_LEN: i64 = 4096;

/// Runs the check on `device` (placed for this rank); an error when a value is off.
pub fn dist_check(device: Device) -> Result<Value> {
    let w = super::current();
    let device = super::place(device)?;
    let i = Tensor::arange(CHECK_LEN, (Kind::Float, device)) + 1.0;
    let t = &i * (w.rank as f64 + 1.0);
    let start = std::time::Instant::now();
    w.all_reduce_sum(&t)?;
    let expect = &i * ((w.size * (w.size + 1)) as f64 / 2.0);
    let err = (&t - &expect).abs().max().double_value(&[]);
    let seconds = start.elapsed().as_secs_f64();
    let first = super::host_values(&t.narrow(0, 0, 4))?;
    let report = json!({
        "rank": w.rank, "world_size": w.size, "local_rank": w.local_rank, "backend": w.backend(),
        "device": format!("{device:?}"), "values": CHECK_LEN, "first": first, "max_abs_err": err,
        "seconds": seconds, "ok": err == 0.0,
    });
    if err != 0.0 {
        return Err(Error::Msg(format!("distributed: dist-check failed on rank {}: {report}", w.rank)));
    }
    Ok(report)
}
