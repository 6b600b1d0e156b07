//! The split protocol of S3PET.md section 6, seeded, and the data directory lookup.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::readers::{read_units, Example, Unit};
use super::spec::{Size, TaskSpec};
use crate::error::{Error, Result};

/// A task's three splits. Train keeps file order (the trainer shuffles); dev and test are in
/// their shuffled order.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskData {
    pub spec: TaskSpec,
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
}

/// The data directory when `--data-dir` is not given: `$S3PET_DATA` if set (and not empty), else
/// `../shared/data` relative to the current directory if it exists, else `None`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("S3PET_DATA").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let fallback = PathBuf::from("../shared/data");
    fallback.is_dir().then_some(fallback)
}

/// Loads a task's files (paths in the spec are relative to `data_dir`) and splits them:
/// - small tasks: train = official train; the official dev set, shuffled with `seed`, is halved:
///   the first half is dev, the second test (MultiRC: whole passages are shuffled and halved);
/// - large tasks: `spec.dev_size` shuffled train examples become dev, the rest (in file order)
///   train; the official dev set is test;
/// - a spec with `test` set: train, official dev and test files as they are.
///
/// The same seed gives the same split. Any empty split is an error.
pub fn load_task(spec: &TaskSpec, data_dir: &Path, seed: u64) -> Result<TaskData> {
    spec.validate()?;
    let mut relative = [Some(&spec.train), Some(&spec.dev), spec.test.as_ref()].into_iter().flatten();
    if let Some(first) = relative.find(|p| p.is_relative()) {
        if !data_dir.is_dir() {
            let msg = format!(
                "data directory not found (needed for {}; set --data-dir or S3PET_DATA)",
                first.display()
            );
            return Err(Error::file(data_dir, msg));
        }
    }
    let train_path = data_dir.join(&spec.train);
    let dev_path = data_dir.join(&spec.dev);
    let train_units = read_units(spec, &train_path)?;
    let dev_units = read_units(spec, &dev_path)?;
    let (train, dev, test, test_path) = if let Some(test) = &spec.test {
        let test_path = data_dir.join(test);
        let test_units = read_units(spec, &test_path)?;
        (train_units, dev_units, test_units, test_path)
    } else {
        match spec.size {
            Size::Small => {
                let (dev, test) = halve(dev_units, seed);
                (train_units, dev, test, dev_path.clone())
            }
            Size::Large => {
                if train_units.len() <= spec.dev_size {
                    let msg = format!(
                        "{} training examples: a large task needs more than dev_size = {}",
                        train_units.len(),
                        spec.dev_size
                    );
                    return Err(Error::file(&train_path, msg));
                }
                let (train, dev) = carve(train_units, spec.dev_size, seed);
                (train, dev, dev_units, dev_path.clone())
            }
        }
    };
    let train = flatten("train", train, &train_path)?;
    let dev = flatten("dev", dev, &dev_path)?;
    let test = flatten("test", test, &test_path)?;
    tracing::info!(
        task = %spec.name, seed, train = train.len(), dev = dev.len(), test = test.len(),
        "loaded task data"
    );
    Ok(TaskData { spec: spec.clone(), train, dev, test })
}

fn flatten(split: &str, units: Vec<Unit>, from: &Path) -> Result<Vec<Example>> {
    let examples: Vec<Example> = units.into_iter().flatten().collect();
    if examples.is_empty() {
        return Err(Error::file(from, format!("the {split} split is empty")));
    }
    Ok(examples)
}

/// Shuffles with `seed` and halves: (first half, second half). With an odd count the first half
/// (dev) gets the extra item.
pub fn halve<T>(mut items: Vec<T>, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
    let second = items.split_off(items.len().div_ceil(2));
    (items, second)
}

/// Picks `n` items at random with `seed`: (the rest in their original order, the picked ones in
/// shuffled order). `n` larger than the input takes everything.
pub fn carve<T>(items: Vec<T>, n: usize, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut rng);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let picked: Vec<T> = order.iter().take(n).filter_map(|&i| slots[i].take()).collect();
    let rest: Vec<T> = slots.into_iter().flatten().collect();
    (rest, picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halve_is_seeded_and_odd_goes_to_dev() {
        let items: Vec<u32> = (0..7).collect();
        let (a, b) = halve(items.clone(), 3);
        assert_eq!((a.len(), b.len()), (4, 3));
        assert_eq!(halve(items.clone(), 3), (a.clone(), b.clone()));
        let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
        all.sort();
        assert_eq!(all, items);
        let other = (0..20).map(|s| halve(items.clone(), s).0).filter(|x| *x != a).count();
        assert!(other > 0, "different seeds should give different splits");
    }

    #[test]
    fn carve_keeps_rest_in_order() {
        let items: Vec<u32> = (0..50).collect();
        let (rest, picked) = carve(items.clone(), 10, 42);
        assert_eq!((rest.len(), picked.len()), (40, 10));
        assert!(rest.windows(2).all(|w| w[0] < w[1]));
        assert!(picked.iter().all(|p| !rest.contains(p)));
        assert_eq!(carve(items.clone(), 10, 42), (rest, picked));
        assert_eq!(carve(items, 60, 1).0.len(), 0);
    }

    #[test]
    fn small_split_halves_dev_and_large_carves_train() {
        let dir = tempfile::tempdir().unwrap();
        let header = "index\tsentence1\tsentence2\tlabel\n";
        let rows = |n: usize| -> String {
            (0..n)
                .map(|i| format!("{i}\ts{i}\th{i}\t{}\n", ["entailment", "not_entailment"][i % 2]))
                .collect()
        };
        std::fs::write(dir.path().join("train.tsv"), format!("{header}{}", rows(9))).unwrap();
        std::fs::write(dir.path().join("dev.tsv"), format!("{header}{}", rows(5))).unwrap();
        let mut spec = TaskSpec::builtin("rte").unwrap();
        spec.train = "train.tsv".into();
        spec.dev = "dev.tsv".into();
        let d = load_task(&spec, dir.path(), 7).unwrap();
        assert_eq!((d.train.len(), d.dev.len(), d.test.len()), (9, 3, 2));
        assert_eq!(d.train[0].texts[0].0, "s0");
        assert_eq!(load_task(&spec, dir.path(), 7).unwrap(), d);

        spec.size = Size::Large;
        spec.dev_size = 4;
        let d = load_task(&spec, dir.path(), 7).unwrap();
        assert_eq!((d.train.len(), d.dev.len(), d.test.len()), (5, 4, 5));
        assert_eq!(d.test[0].texts[0].0, "s0");
        spec.dev_size = 9;
        let err = load_task(&spec, dir.path(), 7).unwrap_err().to_string();
        assert!(err.contains("train.tsv") && err.contains("dev_size"), "{err}");

        spec.size = Size::Small;
        std::fs::write(dir.path().join("one.tsv"), format!("{header}{}", rows(1))).unwrap();
        spec.dev = "one.tsv".into();
        let err = load_task(&spec, dir.path(), 7).unwrap_err().to_string();
        assert!(err.contains("one.tsv") && err.contains("test split is empty"), "{err}");

        spec.dev = "dev.tsv".into();
        spec.test = Some("one.tsv".into());
        let d = load_task(&spec, dir.path(), 7).unwrap();
        assert_eq!((d.train.len(), d.dev.len(), d.test.len()), (9, 5, 1));
    }
}
