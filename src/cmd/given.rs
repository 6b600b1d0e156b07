//! Which values the user gave, and where (the command line, `--config FILE`, the environment): the top
//! layers of the run configuration ([`s3pet::config::layers`]).
use crate::cli::{CommonArgs, SearchOpts, SpaceArgs};
use s3pet::config::{Given, Source};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::ffi::OsString;

/// The expanded command line and the options `--config FILE` inserted into it.
pub struct ArgSources {
    argv: Vec<String>,
    file_keys: HashSet<String>,
}

impl ArgSources {
    pub fn new(args: &[OsString], file_keys: HashSet<String>) -> Self {
        ArgSources { argv: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(), file_keys }
    }

    /// Where the value of `--long` came from: the file, the command line, else the environment (clap
    /// read it from `S3PET_MODEL` / `S3PET_DATA`).
    fn source(&self, long: &str) -> Source {
        let flag = format!("--{long}");
        if self.file_keys.contains(long) {
            Source::File
        } else if self.argv.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
            Source::Cli
        } else {
            Source::Env
        }
    }

    /// Every field of `args` the user set (non-null, flags only when on), under `prefix`.
    pub fn collect(&self, args: &impl Serialize, prefix: &str, out: &mut Given) {
        let Ok(Value::Object(map)) = serde_json::to_value(args) else { return };
        for (k, v) in map {
            if v.is_null() || v == Value::Bool(false) {
                continue;
            }
            let src = self.source(&k.replace('_', "-"));
            out.insert(format!("{prefix}{k}"), (v, src));
        }
    }

    /// The given values of a training command: its common options, `task`, and for `search` / `run` the
    /// space and search options under `search.`; `extra` adds command-specific ones as (config key, long
    /// option, value).
    pub fn given(
        &self,
        task: &str,
        common: &CommonArgs,
        search: Option<(&SpaceArgs, &SearchOpts)>,
        extra: &[(&str, &str, Option<Value>)],
    ) -> Given {
        let mut g = Given::new();
        g.insert("task".into(), (Value::String(task.into()), self.source("task")));
        self.collect(common, "", &mut g);
        if let Some((space, opts)) = search {
            self.collect(space, "search.", &mut g);
            self.collect(opts, "search.", &mut g);
        }
        for (key, long, v) in extra {
            if let Some(v) = v {
                g.insert(key.to_string(), (v.clone(), self.source(long)));
            }
        }
        g
    }
}
