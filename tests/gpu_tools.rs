//! tools/gpu/results_io.py: a plan's results go out to the lent GPU and back, cut cells with their
//! checkpoints, in archives that fit what a call carries, over several calls (tools/gpu/paper_mpnet.sh).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const RES: &str = "gpu/results-mpnet";

fn results_io(cwd: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gpu/results_io.py");
    let out = Command::new("python3").arg(script).args(args).current_dir(cwd).output().unwrap();
    assert!(out.status.success(), "results_io.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A cell directory with a small file and, when `weights` is given, a weights file of that many bytes.
fn cell(root: &Path, id: &str, weights: Option<(&str, usize)>) -> PathBuf {
    let d = root.join(RES).join("cells").join(id);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("config.json"), format!("{{\"id\": \"{id}\"}}")).unwrap();
    if let Some((name, n)) = weights {
        fs::write(d.join(name), (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    }
    d
}

fn finish(root: &Path, id: &str) {
    let runs = root.join(RES).join("runs.jsonl");
    let mut text = fs::read_to_string(&runs).unwrap_or_default();
    text.push_str(&format!("{{\"id\": \"{id}\"}}\n"));
    fs::write(runs, text).unwrap();
}

fn size(p: PathBuf) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.len())
}

fn files(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

#[test]
fn cut_cells_travel_out_and_back_with_their_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let (here, device) = (t.path().join("here"), t.path().join("device"));
    // here: one finished cell (its weights stay here), three cut cells: 3 KB, 5 KB and 20 KB checkpoints
    cell(&here, "done", Some(("weights.safetensors", 1000)));
    finish(&here, "done");
    for (id, n) in [("a", 3000), ("b", 5000), ("big", 20_000)] {
        cell(&here, id, Some(("search_checkpoint.safetensors", n)));
    }
    let said = results_io(&here, &["outbound", RES, "gpu/results-carry", "gpu/ckpt-out", "--mb", "0.01"]);
    assert!(said.contains("big: its checkpoint"), "{said}");
    assert_eq!(files(&here.join("gpu/ckpt-out"), "out-"), ["out-00.tgz"], "a and b in one archive");
    let carried = here.join("gpu/results-carry/cells");
    assert!(
        size(carried.join("done/weights.safetensors")).is_none() && carried.join("a/config.json").is_file()
    );

    // device: the carried results and one call per archive, merged; then it runs: a finishes, b moves on
    // (a new checkpoint), c starts and is cut
    fs::create_dir_all(device.join("gpu/ckpt-in")).unwrap();
    let copy = |from: &Path, to: &Path| {
        assert!(Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap().success());
    };
    copy(&here.join("gpu/results-carry"), &device.join("gpu/"));
    for f in files(&here.join("gpu/ckpt-out"), "out-") {
        copy(&here.join("gpu/ckpt-out").join(&f), &device.join("gpu/ckpt-in"));
    }
    results_io(&device, &["merge", "gpu/results-carry", RES, "gpu/ckpt-in"]);
    let dev_cells = device.join(RES).join("cells");
    assert_eq!(size(dev_cells.join("a/search_checkpoint.safetensors")), Some(3000));
    assert_eq!(size(dev_cells.join("b/search_checkpoint.safetensors")), Some(5000));
    assert!(files(&device.join("gpu/ckpt-in"), "").is_empty());
    finish(&device, "a");
    fs::write(dev_cells.join("a/weights.safetensors"), b"w").unwrap();
    fs::write(dev_cells.join("b/search_checkpoint.safetensors"), vec![1u8; 4000]).unwrap();
    cell(&device, "c", Some(("checkpoint.safetensors", 6000)));

    // a call while the plan runs: finished cells only; here the cut cells stay as they went out
    let (mid, last, more) = (t.path().join("mid"), t.path().join("last"), t.path().join("more"));
    results_io(&device, &["pack", RES, mid.to_str().unwrap(), "--shipped", "shipped.txt"]);
    assert_eq!(files(&mid, ""), ["results-mpnet.tgz"]);
    results_io(&here, &["collect", RES, mid.to_str().unwrap()]);
    let here_cells = here.join(RES).join("cells");
    assert_eq!(size(here_cells.join("b/search_checkpoint.safetensors")), Some(5000));
    assert!(here_cells.join("a").is_dir() && !here_cells.join("c").exists());

    // the plan has stopped: the cut cells with their checkpoints (b 4 KB, c 6 KB: an archive each at
    // 8 KiB), one archive a call (--files 1), the rest on the next call (ship)
    let args = ["pack", RES, last.to_str().unwrap(), "--final", "--shipped", "shipped.txt"];
    let said = results_io(&device, &[&args[..], &["--files", "1", "--mb", "0.008"]].concat());
    assert!(said.contains("1 more archives remain"), "{said}");
    assert!(size(dev_cells.join("a/weights.safetensors")).is_none(), "a finished cell's weights stay there");
    let said = results_io(
        &device,
        &["ship", RES, more.to_str().unwrap(), "--shipped", "shipped.txt", "--files", "1", "--mb", "0.01"],
    );
    assert!(!said.contains("remain"), "{said}");
    // an archive of checkpoints alone (its call's results-mpnet.tgz lost) restores its cells whole:
    // the runner resumes a cell only where its config.json is
    let alone = t.path().join("alone");
    fs::create_dir_all(&alone).unwrap();
    results_io(&alone, &["collect", RES, more.to_str().unwrap()]);
    let restored = alone.join(RES).join("cells").join("c");
    assert!(restored.join("config.json").is_file() && restored.join("checkpoint.safetensors").is_file());
    results_io(&here, &["collect", RES, last.to_str().unwrap()]);
    results_io(&here, &["collect", RES, more.to_str().unwrap()]);
    assert_eq!(size(here_cells.join("b/search_checkpoint.safetensors")), Some(4000));
    assert_eq!(size(here_cells.join("c/checkpoint.safetensors")), Some(6000));
    // too big to travel: the stale checkpoint goes, and the cell starts over next lease
    assert!(size(here_cells.join("big/search_checkpoint.safetensors")).is_none());
    let runs = fs::read_to_string(here.join(RES).join("runs.jsonl")).unwrap();
    assert_eq!(runs.lines().count(), 2, "{runs}");
}

#[test]
fn a_fresh_machines_results_keep_what_an_earlier_call_brought_back() {
    let t = tempfile::tempdir().unwrap();
    let (here, first, fresh) = (t.path().join("here"), t.path().join("first"), t.path().join("fresh"));
    fs::create_dir_all(&here).unwrap();
    // the first machine of a lease finishes x and y, and a call brings them back; the device then hands
    // out a fresh machine, which starts from the carried results (none) and finishes y and z
    for (machine, ids) in [(&first, ["x", "y"]), (&fresh, ["y", "z"])] {
        for id in ids {
            cell(machine, id, None);
            finish(machine, id);
        }
    }
    for (machine, out) in [(&first, "out-first"), (&fresh, "out-fresh")] {
        let out = t.path().join(out);
        results_io(machine, &["pack", RES, out.to_str().unwrap()]);
        results_io(&here, &["collect", RES, out.to_str().unwrap()]);
    }
    let runs = fs::read_to_string(here.join(RES).join("runs.jsonl")).unwrap();
    let ids: Vec<_> = runs.lines().map(|l| l.split('"').nth(3).unwrap().to_string()).collect();
    assert_eq!(ids, ["x", "y", "z"], "{runs}");
    assert!(["x", "y", "z"].iter().all(|id| here.join(RES).join("cells").join(id).is_dir()));
}
