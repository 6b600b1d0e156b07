//! The split protocol of S3PET.md section 6, seeded, and the data directory lookup.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::readers::{Example, Unit};
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

/// The data directory when `--data-dir` is not given: `$S3PET_DATA` if set and not empty, else
/// `None` (the task's data then comes from the Hugging Face Hub).
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::var_os("S3PET_DATA").filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// Loads a task's files (paths in the spec are relative to `data_dir`) and splits them with
/// [`apply_protocol`]; see [`super::load_task_from`] for the Hub.
pub fn load_task(spec: &TaskSpec, data_dir: &Path, seed: u64) -> Result<TaskData> {
    super::source::load_task_from(spec, &super::source::DataSource::Dir(data_dir.to_path_buf()), seed)
        .map(|(data, _)| data)
}

/// One split's units as read, and where they came from (a file, or a hub split) for messages.
pub(crate) struct SplitUnits {
    pub units: Vec<Unit>,
    pub origin: PathBuf,
}

/// The split protocol:
/// - small tasks: train = official train; the official dev set, shuffled with `seed`, is halved:
///   the first half is dev, the second test (MultiRC: whole passages are shuffled and halved);
/// - large tasks: `spec.dev_size` shuffled train examples become dev, the rest (in file order)
///   train; the official dev set is test;
/// - a spec with a test file or split: train, official dev and test as they are.
///
/// The same seed gives the same split. Any empty split is an error.
pub(crate) fn apply_protocol(
    spec: &TaskSpec,
    train: SplitUnits,
    dev: SplitUnits,
    test: Option<SplitUnits>,
    seed: u64,
) -> Result<TaskData> {
    let (train_path, dev_path) = (train.origin, dev.origin);
    let (train, dev, test, test_path) = if let Some(test) = test {
        (train.units, dev.units, test.units, test.origin)
    } else {
        match spec.size {
            Size::Small => {
                let (dev, test) = halve(dev.units, seed);
                (train.units, dev, test, dev_path.clone())
            }
            Size::Large => {
                if train.units.len() <= spec.dev_size {
                    let msg = format!(
                        "{} training examples: a large task needs more than dev_size = {}",
                        train.units.len(),
                        spec.dev_size
                    );
                    return Err(Error::file(&train_path, msg));
                }
                let (train, carved) = carve(train.units, spec.dev_size, seed);
                (train, carved, dev.units, dev_path.clone())
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
        spec.train = Some("train.tsv".into());
        spec.dev = Some("dev.tsv".into());
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
        spec.dev = Some("one.tsv".into());
        let err = load_task(&spec, dir.path(), 7).unwrap_err().to_string();
        assert!(err.contains("one.tsv") && err.contains("test split is empty"), "{err}");

        spec.dev = Some("dev.tsv".into());
        spec.test = Some("one.tsv".into());
        let d = load_task(&spec, dir.path(), 7).unwrap();
        assert_eq!((d.train.len(), d.dev.len(), d.test.len()), (9, 5, 1));
    }
}
