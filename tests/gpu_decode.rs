//! GPU correctness of the ETAP decode against the float64 reference (see
//! `flashmla_etap::check`). Skips, saying so, where there is no sm_90 GPU.
mod common;

use flashmla_etap::check::Case;
use flashmla_etap::decode::Decoder;
use flashmla_etap::reference::Dtype;

fn run_all(name: &str, cases: &[Case]) {
    let gpu = require_gpu!(name);
    let decoder = Decoder::new(&gpu).unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let r = case
            .run(&decoder)
            .unwrap_or_else(|e| panic!("{}: {e}", case.describe()));
        let verdict = if r.passes() { "ok" } else { "FAIL" };
        println!(
            "{verdict} {}: rmse {:.3e} floor {:.3e} ratio {:.3} lse_err {:.1e} bad {} det {}",
            case.describe(),
            r.rmse,
            r.floor,
            if r.floor > 0.0 { r.rmse / r.floor } else { 0.0 },
            r.lse_rel_err,
            r.bad_values,
            r.deterministic
        );
        if !r.passes() {
            failures.push(case.describe());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed: {failures:#?}",
        failures.len(),
        cases.len()
    );
}

fn case(dtype: Dtype, s_q: usize, h_q: usize, lengths: Vec<i32>, causal: bool) -> Case {
    Case {
        dtype,
        s_q,
        h_q,
        h_kv: 1,
        lengths,
        causal,
        out_f32: false,
        seed: 7,
    }
}

#[test]
fn decode_smoke() {
    run_all(
        "decode_smoke",
        &[
            case(Dtype::Bf16, 1, 16, vec![64], false),
            case(Dtype::Bf16, 1, 16, vec![1], false),
            case(Dtype::Bf16, 1, 16, vec![100, 0, 300], false),
            case(Dtype::Bf16, 1, 16, vec![4096; 2], false),
            case(Dtype::Bf16, 1, 64, vec![1000; 3], false),
            case(Dtype::Bf16, 1, 128, vec![1000; 3], false),
            case(Dtype::F16, 2, 16, vec![200; 2], true),
            case(Dtype::Bf16, 1, 3, vec![140; 2], false),
        ],
    );
}

#[test]
fn decode_grid() {
    run_all("decode_grid", &flashmla_etap::check::grid());
}
