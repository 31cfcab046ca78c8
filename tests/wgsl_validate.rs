//! Every `.wgsl` in `shaders/` parses and validates with naga (no GPU needed), the pipelines are
//! built from exactly the validated sources, and the Rust uniform structs match naga's layout
//! of their WGSL twins (WGSL alignment differs silently from `#[repr(C)]` otherwise).
#![cfg(feature = "gpu")]

use std::path::PathBuf;

use latentlens::gpu::forward::{self, compose_forward, FwdKernel};
use latentlens::gpu::{compose_wgsl, uniform_layouts, Kernel};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn shaders_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

fn read(name: &str) -> String {
    let p = shaders_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The file as the pipeline sees it (common top-k or quant code inserted when the file
/// requires it).
fn composed(name: &str) -> String {
    let with_topk = compose_wgsl(&read(name), &read("topk_common.wgsl"));
    compose_forward(&with_topk, &read("quant_common.wgsl"))
}

fn is_common(name: &str) -> bool {
    name.ends_with("_common.wgsl")
}

fn validate(name: &str, src: &str, caps: Capabilities) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(src)));
    Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: naga validation error:\n{}", e.emit_to_string(src)));
    module
}

fn needs_f16(name: &str) -> bool {
    name.ends_with("_f16.wgsl")
}

#[test]
fn every_wgsl_file_validates_with_naga() {
    let mut names: Vec<String> = std::fs::read_dir(shaders_dir())
        .expect("shaders/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "expected the 6 kernel files, found {names:?}"
    );
    for name in &names {
        let src = composed(name);
        // f32 kernels must not need any optional capability: only the WebGPU baseline, which
        // includes `unpack2x16float` (naga's SHADER_FLOAT16_IN_FLOAT32; wgpu's downlevel flag
        // SHADER_F16_IN_F32, present on every WebGPU adapter, SwiftShader and lavapipe too)
        let baseline = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        let caps = if needs_f16(name) {
            baseline | Capabilities::SHADER_FLOAT16
        } else {
            baseline
        };
        let module = validate(name, &src, caps);
        if !is_common(name) {
            let eps: Vec<_> = module
                .entry_points
                .iter()
                .map(|e| (e.name.as_str(), e.workgroup_size))
                .collect();
            assert_eq!(
                eps,
                vec![("main", [256, 1, 1])],
                "{name}: one compute entry point `main` of 256"
            );
        }
    }
}

#[test]
fn f16_kernels_are_rejected_without_the_f16_capability() {
    for name in ["exact_topk_f16.wgsl", "matmul_f16.wgsl"] {
        let src = composed(name);
        let module = naga::front::wgsl::parse_str(&src).expect("parses");
        assert!(
            Validator::new(ValidationFlags::all(), Capabilities::SHADER_FLOAT16_IN_FLOAT32)
                .validate(&module)
                .is_err(),
            "{name}: the f16 variant must need SHADER_FLOAT16 (else it is not the f16 variant)"
        );
    }
}

#[test]
fn f16_matmul_is_the_f32_matmul_with_f16_tiles() {
    // one host drives both: same params struct (layout checked below), same bindings, same
    // entry point; and only the f16 file is flagged as needing shader-f16
    let bindings = |name: &str| -> Vec<(u32, String, String)> {
        let src = composed(name);
        let module = validate(name, &src, Capabilities::SHADER_FLOAT16_IN_FLOAT32 | Capabilities::SHADER_FLOAT16);
        let mut b: Vec<(u32, String, String)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let rb = g.binding.as_ref()?;
                let ty = format!("{:?}", module.types[g.ty].inner);
                Some((rb.binding, g.name.clone().unwrap_or_default(), format!("{:?} {ty}", g.space)))
            })
            .collect();
        b.sort();
        b
    };
    assert_eq!(bindings("matmul_f16.wgsl"), bindings("matmul.wgsl"));
    assert!(FwdKernel::MatmulF16.needs_f16() && !FwdKernel::Matmul.needs_f16());
    assert!(FwdKernel::ALL.iter().filter(|k| k.needs_f16()).all(|k| needs_f16(k.file_name())));
    assert!(FwdKernel::MatmulF16.source().starts_with("enable f16;"), "enable must stay first");
    // half the workgroup memory of the f32 kernel
    let wg_bytes = |name: &str| -> u32 {
        let src = composed(name);
        let module = validate(name, &src, Capabilities::all());
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
            .map(|(_, g)| layouter[g.ty].size)
            .sum()
    };
    assert_eq!(wg_bytes("matmul.wgsl"), 16384);
    assert_eq!(wg_bytes("matmul_f16.wgsl"), 8192);
}

#[test]
fn pipelines_use_exactly_the_validated_sources() {
    for k in Kernel::ALL {
        assert_eq!(k.source(), composed(k.file_name()), "{}", k.file_name());
    }
    for k in FwdKernel::ALL {
        assert_eq!(k.source(), composed(k.file_name()), "{}", k.file_name());
    }
    let mut files: Vec<&str> = Kernel::ALL.iter().map(|k| k.file_name()).collect();
    files.extend(FwdKernel::ALL.iter().map(|k| k.file_name()));
    files.push("topk_common.wgsl");
    files.push("quant_common.wgsl");
    for e in std::fs::read_dir(shaders_dir()).expect("shaders/") {
        let n = e
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if n.ends_with(".wgsl") {
            assert!(
                files.contains(&n.as_str()),
                "{n} is not a Kernel (dead shader?)"
            );
        }
    }
}

#[test]
fn uniform_structs_match_wgsl_layout() {
    let mut layouts = uniform_layouts();
    layouts.extend(forward::uniform_layouts());
    assert_eq!(forward::uniform_layouts().len(), FwdKernel::ALL.len(), "one params struct per forward kernel");
    for (file, struct_name, rust_size, fields) in layouts {
        let src = composed(file);
        let module = validate(file, &src, Capabilities::all());
        let (span, members) = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(n), naga::TypeInner::Struct { members, span }) if n == struct_name => {
                    Some((*span, members.clone()))
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{file}: no struct {struct_name}"));
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(wgsl, rust, "{file}: {struct_name} field offsets");
        assert_eq!(span as usize, rust_size, "{file}: {struct_name} size");
        if struct_name != "Candidate" {
            assert_eq!(
                rust_size % 16,
                0,
                "{struct_name}: uniform buffer size must be a multiple of 16"
            );
        }
    }
}
