//! Plots never need a system font: `s3pet plot` draws with the DejaVu Sans compiled into the binary when
//! S3PET_FONT is unset or names no usable font (the binary reads no system font path at all).
mod common;
use common::{ok, s3pet, task_dir};
use std::path::Path;

fn plot(what: &str, run: &Path, font: Option<&str>) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_s3pet"));
    c.args(["plot", what, run.to_str().unwrap()]).env("S3PET_MODEL", common::tiny_dir());
    match font {
        Some(f) => c.env("S3PET_FONT", f),
        None => c.env_remove("S3PET_FONT"),
    };
    c.output().unwrap()
}

fn non_empty(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.len() > 1000).unwrap_or(false)
}

#[test]
fn plots_draw_with_the_embedded_font() {
    let d = task_dir();
    let run = d.path().join("run");
    let task = d.path().join("task.toml");
    ok(s3pet(
        &[
            "train",
            "--task",
            task.to_str().unwrap(),
            "--method",
            "bitfit",
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "4",
            "--batch-size",
            "8",
            "--threads",
            "1",
        ],
        d.path(),
    ));
    for font in [None, Some("/nonexistent/fonts/NoSuch.ttf"), Some(task.to_str().unwrap())] {
        for f in ["structure.png", "structure.svg", "curves-loss.png", "curves-metrics.svg"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let o = plot("structure", &run, font);
        assert!(o.status.success(), "S3PET_FONT {font:?}: {}", String::from_utf8_lossy(&o.stderr));
        let o = plot("curves", &run, font);
        assert!(o.status.success(), "S3PET_FONT {font:?}: {}", String::from_utf8_lossy(&o.stderr));
        for f in ["structure.png", "structure.svg", "curves-loss.png", "curves-metrics.svg"] {
            assert!(non_empty(&run.join(f)), "S3PET_FONT {font:?}: {f}");
        }
        if font.is_some() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("embedded DejaVu Sans"), "a bad S3PET_FONT is named in a warning: {err}");
        }
    }
    let svg = std::fs::read_to_string(run.join("structure.svg")).unwrap();
    assert!(svg.contains("<text"), "the figure has text");
}
