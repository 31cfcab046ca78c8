//! HF transformers goldens of the tiny VLM fixtures (tools/make_tiny_fixtures.py),
//! parsed from bytes so the same code serves the browser tests (include_bytes!).
#![allow(dead_code)]

use safetensors::SafeTensors;

/// What `golden.safetensors` + `meta.json` hold.
pub struct Golden {
    pub ids: Vec<u32>,
    pub pixel_values: Vec<f32>,
    /// (shape, values)
    pub image_features: (Vec<usize>, Vec<f32>),
    /// Per LLM layer 0..=L: (shape `[tokens, d]`, values).
    pub hidden: Vec<(Vec<usize>, Vec<f32>)>,
    pub prompt: String,
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("golden {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

impl Golden {
    pub fn parse(golden: &[u8], meta_json: &[u8]) -> Self {
        let st = SafeTensors::deserialize(golden).expect("golden.safetensors");
        let t = st.tensor("input_ids").expect("input_ids");
        assert_eq!(t.dtype(), safetensors::Dtype::I64);
        let ids = t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
        let mut hidden = Vec::new();
        while st.tensor(&format!("hidden_states.{}", hidden.len())).is_ok() {
            hidden.push(f32s(&st, &format!("hidden_states.{}", hidden.len())));
        }
        let meta: serde_json::Value = serde_json::from_slice(meta_json).expect("meta.json");
        Golden {
            ids,
            pixel_values: f32s(&st, "pixel_values").1,
            image_features: f32s(&st, "image_features"),
            hidden,
            prompt: meta["prompt"].as_str().expect("meta.prompt").to_string(),
        }
    }
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
