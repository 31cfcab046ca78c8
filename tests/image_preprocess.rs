//! Preprocessing parity: our image processors vs HF transformers' PIL-backend
//! processors (pixel values saved by tools/make_tiny_fixtures.py) on the same
//! PNG photos, plus bad-input behaviour of decoding.

use std::path::PathBuf;

use latentlens::image::{decode, decode::decode_with, DecodeLimits, ImageError, Processor, RgbImage};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn f32_tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (t.shape().to_vec(), v)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Our pixel values vs HF's for each processor config of the preprocess fixture.
#[test]
fn pixel_values_match_hf_pil_processors() {
    let dir = fixtures().join("preprocess");
    let img = decode(&std::fs::read(dir.join("chelsea.png")).unwrap()).unwrap();
    let cfgs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("processors.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("pixel_values.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["clip", "siglip", "idefics3", "idefics3_nosplit"] {
        let p = Processor::from_hf_json(&cfgs[name]).unwrap();
        let out = p.preprocess(&img).unwrap();
        let (shape, want) = f32_tensor(&st, name);
        assert_eq!(
            shape,
            vec![out.num_tiles(), 3, out.height as usize, out.width as usize],
            "{name}: tile layout"
        );
        let d = max_abs_diff(&out.pixel_values, &want);
        eprintln!("preprocess {name}: tiles={} {}x{} max|ours-HF|={d:e}", out.num_tiles(), out.width, out.height);
        assert!(d <= 1e-6, "{name}: max abs diff {d}");
    }
}

/// The fixture models' own processors reproduce the goldens' pixel values.
#[test]
fn model_fixture_pixel_values_match_hf() {
    for name in ["llava_clip_llama", "llava_siglip_qwen2", "idefics3_llama"] {
        let dir = fixtures().join(name);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("processor_config.json")).unwrap()).unwrap();
        let p = Processor::from_hf_json(&cfg).unwrap();
        let img = decode(&std::fs::read(dir.join("image.png")).unwrap()).unwrap();
        let out = p.preprocess(&img).unwrap();
        let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (shape, want) = f32_tensor(&st, "pixel_values");
        assert_eq!(shape.iter().product::<usize>(), out.pixel_values.len(), "{name}");
        let d = max_abs_diff(&out.pixel_values, &want);
        eprintln!("preprocess {name}: max|ours-HF|={d:e}");
        assert!(d <= 1e-6, "{name}: max abs diff {d}");
    }
}

/// Idefics3 geometry: 2 x 3 tiles of the 120x80 photo plus the global image.
#[test]
fn idefics3_tiles_cover_the_original_image() {
    let dir = fixtures().join("idefics3_llama");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("processor_config.json")).unwrap()).unwrap();
    let p = Processor::from_hf_json(&cfg).unwrap();
    let img = decode(&std::fs::read(dir.join("image.png")).unwrap()).unwrap();
    let out = p.preprocess(&img).unwrap();
    assert_eq!((out.rows, out.cols, out.num_tiles()), (2, 3, 7));
    let last = out.tiles[5];
    assert_eq!(last.grid, Some((1, 2)));
    assert_eq!(last.rect(0.0, 0.0, 32.0, 32.0, out.original), [80.0, 40.0, 120.0, 80.0]);
    let global = out.tiles[6];
    assert_eq!(global.grid, None);
    assert_eq!(global.rect(0.0, 0.0, 32.0, 32.0, out.original), [0.0, 0.0, 120.0, 80.0]);
}

#[test]
fn non_image_bytes_are_refused() {
    for bytes in [&b""[..], b"hello, not an image", b"\x89PNG\r\n\x1a\n garbage"] {
        match decode(bytes) {
            Err(ImageError::Decode(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}

fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    // Signature + IHDR (8-bit RGB) + an empty IDAT, correct CRCs, no pixel data.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32fast::hash(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(b"IDAT");
    out.extend_from_slice(&crc32fast::hash(b"IDAT").to_be_bytes());
    out
}

#[test]
fn enormous_image_is_refused_from_its_header() {
    // 100000 x 100000 would be 30 GB of RGB: refused before any allocation.
    match decode(&png_header_only(100_000, 100_000)) {
        Err(ImageError::TooLarge { width, height, .. }) => assert_eq!((width, height), (100_000, 100_000)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let small = DecodeLimits { max_side: 64, max_pixels: 64 * 64 };
    match decode_with(&png_header_only(65, 10), &small) {
        Err(ImageError::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn zero_sized_image_is_refused() {
    match decode(&png_header_only(0, 10)) {
        Err(ImageError::Empty { .. }) | Err(ImageError::Decode(_)) => {}
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(RgbImage::from_raw(0, 5, vec![]), Err(ImageError::Empty { .. })));
}

#[test]
fn unsupported_processor_configs_are_refused() {
    let bad = [
        serde_json::json!({"image_processor_type": "ViTImageProcessor"}),
        serde_json::json!({"size": {"shortest_edge": 32}}),
        serde_json::json!({"image_processor_type": "CLIPImageProcessor", "resample": 0}),
        serde_json::json!({"image_processor_type": "CLIPImageProcessor", "image_std": [0.5, 0.0, 0.5]}),
        serde_json::json!({"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5]}),
        serde_json::json!({"image_processor_type": "SiglipImageProcessor", "size": {"shortest_edge": 0}}),
        serde_json::json!({"image_processor_type": "Idefics3ImageProcessor", "max_image_size": {"longest_edge": 0}}),
    ];
    for cfg in bad {
        match Processor::from_hf_json(&cfg) {
            Err(ImageError::Config(msg)) => assert!(!msg.is_empty()),
            other => panic!("{cfg}: expected a config error, got {other:?}"),
        }
    }
}

fn f64_tensor(st: &SafeTensors, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
    t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Real-size settings (LLaVA-1.5 CLIP 336, CLIP 224, SigLIP 384, SmolVLM
/// 2048/512 with 13 tiles, Idefics3 1456/364) on the full 451x300 photo:
/// compact goldens (per tile and channel sums, every 397th value).
#[test]
fn real_size_processors_match_hf() {
    let dir = fixtures().join("preprocess");
    let img = decode(&std::fs::read(dir.join("chelsea_full.png")).unwrap()).unwrap();
    let cfgs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("real_size_processors.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("real_size.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["clip336", "clip224", "siglip384", "smolvlm", "idefics3"] {
        let p = Processor::from_hf_json(&cfgs[name]).unwrap();
        let out = p.preprocess(&img).unwrap();
        let shape: Vec<usize> = st
            .tensor(&format!("{name}.shape"))
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        assert_eq!(shape, vec![out.num_tiles(), 3, out.height as usize, out.width as usize], "{name}");
        let (_, want) = f32_tensor(&st, &format!("{name}.samples"));
        let ours: Vec<f32> = out.pixel_values.iter().step_by(397).copied().collect();
        let d = max_abs_diff(&ours, &want);
        let plane = out.width as usize * out.height as usize;
        let sums: Vec<f64> =
            out.pixel_values.chunks_exact(plane).map(|c| c.iter().map(|&v| v as f64).sum()).collect();
        let want_sums = f64_tensor(&st, &format!("{name}.sums"));
        let ds = sums.iter().zip(&want_sums).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!(
            "real-size {name}: tiles={} {}x{} max|ours-HF| samples={d:e} plane sums={ds:e}",
            out.num_tiles(),
            out.width,
            out.height
        );
        assert!(d <= 1e-6, "{name}: samples differ by {d}");
        assert!(ds <= 1e-2, "{name}: plane sums differ by {ds}");
    }
}

/// JPEG decoding: the `image` crate vs PIL (libjpeg) on the same file.
/// Decoders may round differently; the difference must stay small.
#[test]
fn jpeg_decoding_is_close_to_pil() {
    let dir = fixtures().join("preprocess");
    let img = decode(&std::fs::read(dir.join("chelsea.jpg")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("chelsea_jpg_pil_rgb.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("rgb").unwrap();
    assert_eq!(t.shape(), &[img.height as usize, img.width as usize, 3]);
    let pil = t.data();
    let max = img.data.iter().zip(pil).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap_or(0);
    let mean = img.data.iter().zip(pil).map(|(&a, &b)| (a as i32 - b as i32).abs() as f64).sum::<f64>()
        / pil.len() as f64;
    let exact = img.data.iter().zip(pil).filter(|(a, b)| a == b).count() as f64 / pil.len() as f64;
    eprintln!("jpeg: max|ours-PIL|={max} (of 255), mean={mean:.4}, identical bytes={:.1}%", exact * 100.0);
    assert!(max <= 8, "JPEG decoders differ by {max}/255");
}

/// RGBA PNG: transparency composited onto white exactly as HF's
/// `convert_to_rgb` (Pillow `alpha_composite`), then SigLIP preprocessing
/// with a non-square size.
#[test]
fn rgba_png_is_composited_on_white_like_hf() {
    let dir = fixtures().join("preprocess");
    let img = decode(&std::fs::read(dir.join("chelsea_rgba.png")).unwrap()).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("chelsea_rgba_siglip.json")).unwrap()).unwrap();
    let out = Processor::from_hf_json(&cfg).unwrap().preprocess(&img).unwrap();
    let bytes = std::fs::read(dir.join("chelsea_rgba_siglip.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, want) = f32_tensor(&st, "pixel_values");
    assert_eq!(shape, vec![1, 3, 24, 36]);
    let d = max_abs_diff(&out.pixel_values, &want);
    eprintln!("rgba: max|ours-HF|={d:e}");
    assert!(d <= 1e-6, "RGBA: max abs diff {d}");
}
