//! T5: the paper's spaces on the T5-large config (exact counts), golden parity of the tiny T5
//! checkpoints with transformers / PEFT (fixtures from tools/make_t5_fixtures.py).
mod common;
use common::fixtures;
use s3pet::backbone::ModelConfig;
use s3pet::space::Space;
use std::process::Command;

fn t5_large() -> ModelConfig {
    ModelConfig::from_file(&fixtures().join("t5_large_config.json")).unwrap()
}

/// S3PET.md section 2: 916 candidates / 1,881,088 parameters (mix), 288 / 884,736 (lora), and
/// 737,668,096 backbone parameters (the shared embedding once).
#[test]
fn t5_large_spaces_have_the_papers_counts() {
    let cfg = t5_large();
    assert!(cfg.is_t5());
    assert_eq!(cfg.param_count(), 737_668_096);
    for (space, n, params) in [("mix", 916, 1_881_088), ("lora", 288, 884_736)] {
        let c = Space::builtin(space).unwrap().candidates(&cfg).unwrap();
        assert_eq!(c.len(), n, "{space} candidates");
        assert_eq!(c.iter().filter_map(|m| m.params).sum::<i64>(), params, "{space} parameters");
        assert!(c.iter().all(|m| !m.site.contains("EncDecAttention.")), "no cross-attention projection");
    }
    let mix = Space::builtin("mix").unwrap().candidates(&cfg).unwrap();
    // LRA bottleneck 1024 / 32 = 32: (d + k + k) + (k + d + d) = 3168, after every SelfAttention and FFN block
    let lra: Vec<_> = mix.iter().filter(|m| m.kind.name() == "lra").collect();
    assert_eq!(lra.len(), 96);
    assert!(lra.iter().all(|m| m.params == Some(3168)));
    // every norm (2 + 3 per encoder / decoder block, 2 final) holds LNFit + BitFit
    assert_eq!(mix.iter().filter(|m| m.site.ends_with("layer_norm")).count(), 2 * (24 * 2 + 24 * 3 + 2));
}

#[test]
fn inspect_reads_a_model_config_without_weights() {
    let cfg = fixtures().join("t5_large_config.json");
    for (space, n, params) in [("mix", 916, 1_881_088), ("lora", 288, 884_736)] {
        let out = Command::new(env!("CARGO_BIN_EXE_s3pet"))
            .args(["inspect", "--model-config", cfg.to_str().unwrap(), "--space", space, "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["candidates"], n);
        assert_eq!(v["candidate_params"], params);
        assert_eq!(v["backbone_params"], 737_668_096i64);
    }
}

/// v1.1 (gated GELU, untied head): wi_0 and wi_1 both take LoRA + BitFit, the LM head is counted.
#[test]
fn gated_untied_config_counts() {
    let text = std::fs::read_to_string(fixtures().join("t5_large_config.json"))
        .unwrap()
        .replace("\"relu\"", "\"gated-gelu\"")
        .replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let cfg = ModelConfig::from_file(&path).unwrap();
    let ffn_extra = 48 * 1024 * 4096; // wi_1 in every block
    assert_eq!(cfg.param_count(), 737_668_096 + ffn_extra + 32128 * 1024);
    let mix = Space::builtin("mix").unwrap().candidates(&cfg).unwrap();
    assert_eq!(mix.len(), 916 + 48 * 2);
    let wi1: i64 = mix.iter().filter(|m| m.site.ends_with(".wi_1")).filter_map(|m| m.params).sum();
    assert_eq!(wi1, 48 * (5120 + 4096));
    assert_eq!(mix.iter().filter_map(|m| m.params).sum::<i64>(), 1_881_088 + 48 * (5120 + 4096));
}
