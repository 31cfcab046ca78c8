//! Scene generator (src/eval/scenes.rs): determinism, ground truth against
//! the drawn pixels, captions, bad input; and with the real emoji package
//! (`LATENTLENS_EMOJI_DIR`) the ≥ 100-kind vocabulary.

use std::path::{Path, PathBuf};

use latentlens::eval::scenes::{generate, names_an_object, plural, Catalog, ObjectKind, SceneConfig, COVER_FRACTION};

/// Opaque squares of distinct colours as object kinds (no assets needed).
fn square_catalog(n: usize) -> Catalog {
    let kinds = (0..n)
        .map(|i| {
            let side = 16u32;
            let mut rgba = Vec::new();
            for _ in 0..side * side {
                rgba.extend_from_slice(&[(i * 37 % 256) as u8, (i * 91 % 256) as u8, 200, 255]);
            }
            let noun = format!("thing{i}");
            ObjectKind { short_name: noun.clone(), plural: format!("{noun}s"), noun, side, rgba }
        })
        .collect();
    Catalog { kinds, skipped: Vec::new() }
}

#[test]
fn deterministic_by_seed() {
    let cat = square_catalog(20);
    let cfg = SceneConfig::default();
    let a = generate(&cat, 42, &cfg).unwrap();
    let b = generate(&cat, 42, &cfg).unwrap();
    assert_eq!(a.rgb, b.rgb);
    assert_eq!(a.caption, b.caption);
    assert_eq!(a.patches, b.patches);
    let c = generate(&cat, 43, &cfg).unwrap();
    assert_ne!(a.rgb, c.rgb);
}

#[test]
fn ground_truth_follows_the_drawn_objects() {
    let cat = square_catalog(30);
    let cfg = SceneConfig::default();
    let mut covered = 0;
    for seed in 0..40 {
        let s = generate(&cat, seed, &cfg).unwrap();
        assert_eq!(s.patches.len(), 49);
        assert!(!s.objects.is_empty() && s.objects.len() <= 6, "seed {seed}: {} objects", s.objects.len());
        assert!(names_an_object(&cat, &s, &s.caption), "caption {:?} names no object", s.caption);
        for p in &s.patches {
            let (x0, y0) = (p.col * 32, p.row * 32);
            // Area of the cell inside each object's box: an upper bound of its visible cover.
            for noun in &p.objects {
                let inside: u32 = s
                    .objects
                    .iter()
                    .filter(|o| &o.noun == noun)
                    .map(|o| {
                        let w = (x0 + 32).min(o.rect[2]).saturating_sub(x0.max(o.rect[0]));
                        let h = (y0 + 32).min(o.rect[3]).saturating_sub(y0.max(o.rect[1]));
                        w * h
                    })
                    .sum();
                assert!(inside as f32 >= COVER_FRACTION * 1024.0, "seed {seed} r{}c{}: {noun} listed but its box covers {inside} px", p.row, p.col);
            }
            // A cell fully inside the last-drawn (topmost) object shows that object.
            let top = s.objects.last().unwrap();
            if x0 >= top.rect[0] && x0 + 32 <= top.rect[2] && y0 >= top.rect[1] && y0 + 32 <= top.rect[3] {
                assert_eq!(p.objects.first(), Some(&top.noun), "seed {seed} r{}c{}", p.row, p.col);
                assert!((p.top_cover - 1.0).abs() < 1e-6);
            }
            if p.objects.is_empty() {
                assert!(!p.background.is_empty(), "an uncovered cell has a background colour");
            } else {
                covered += 1;
            }
        }
    }
    assert!(covered > 200, "only {covered} covered cells in 40 scenes");
}

#[test]
fn plurals() {
    for (s, p) in [("cat", "cats"), ("mouse", "mice"), ("cherry", "cherries"), ("bus", "buses"), ("knife", "knives"), ("sheep", "sheep"), ("monkey", "monkeys")] {
        assert_eq!(plural(s), p);
    }
}

#[test]
fn bad_input_is_refused() {
    let cat = square_catalog(3);
    assert!(generate(&cat, 1, &SceneConfig { size: 224, grid: 5 }).is_err());
    assert!(generate(&Catalog { kinds: vec![], skipped: vec![] }, 1, &SceneConfig::default()).is_err());
    // Unknown names and missing artwork are skipped with a count.
    let json = br#"[{"short_names":["dog2"],"image":"1f415.png","has_img_google":true}]"#;
    let c = Catalog::from_emoji(json, |_| None);
    assert!(c.is_err(), "no artwork at all is an error");
    assert!(Catalog::from_emoji(b"{}", |_| None).is_err());
}

fn emoji_dir() -> Option<PathBuf> {
    let require = std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1");
    match std::env::var("LATENTLENS_EMOJI_DIR") {
        Ok(p) if Path::new(&p).join("emoji.json").is_file() => Some(PathBuf::from(p)),
        _ => {
            let msg = "SKIPPING emoji test: LATENTLENS_EMOJI_DIR unset or missing (./build.sh assets)";
            assert!(!require, "{msg} — and LATENTLENS_REQUIRE_ASSETS=1");
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

#[test]
fn real_emoji_vocabulary() {
    let Some(dir) = emoji_dir() else { return };
    let cat = Catalog::from_dir(&dir).unwrap();
    eprintln!("{} kinds, skipped {:?}", cat.kinds.len(), cat.skipped);
    assert!(cat.kinds.len() >= 100, "only {} object kinds", cat.kinds.len());
    let s = generate(&cat, 7, &SceneConfig::default()).unwrap();
    assert!(names_an_object(&cat, &s, &s.caption));
    assert!(s.patches.iter().any(|p| !p.objects.is_empty()));
    // Missing artwork is skipped and counted, not fatal.
    let json = std::fs::read(dir.join("emoji.json")).unwrap();
    let mut n = 0;
    let partial = Catalog::from_emoji(&json, |name| {
        n += 1;
        if n % 2 == 0 { None } else { std::fs::read(dir.join("img/google/64").join(name)).ok() }
    })
    .unwrap();
    assert_eq!(partial.kinds.len() + partial.skipped.len(), latentlens::eval::scenes::VOCABULARY.len());
    assert!(partial.skipped.iter().any(|(_, why)| why.contains("missing")));
}

#[test]
fn artwork_bundle_round_trips_and_refuses_bad_files() {
    // no assets needed: the bundle of generated squares
    let cat = square_catalog(12);
    let bundle = cat.to_bundle().unwrap();
    let back = Catalog::from_bundle(&bundle).unwrap();
    assert_eq!(back.kinds.len(), 12);
    for seed in [0, 5, 99] {
        let (a, b) = (generate(&cat, seed, &SceneConfig::default()).unwrap(), generate(&back, seed, &SceneConfig::default()).unwrap());
        assert_eq!(a.rgb, b.rgb, "seed {seed}: the bundle's artwork draws differently");
        assert_eq!(a.caption, b.caption);
    }
    let e = Catalog::from_bundle(b"not a bundle at all").unwrap_err().to_string();
    assert!(e.contains("magic"), "{e}");
    for cut in [8, 12, 20, bundle.len() - 1] {
        let e = Catalog::from_bundle(&bundle[..cut]).unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("kinds"), "cut at {cut}: {e}");
    }
    let mut bad = bundle.clone();
    bad[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(Catalog::from_bundle(&bad).unwrap_err().to_string().contains("0 kinds"));
    // real artwork: the page's scenes equal the CLI's (`latentlens scenes`)
    let Some(dir) = emoji_dir() else { return };
    let real = Catalog::from_dir(&dir).unwrap();
    let back = Catalog::from_bundle(&real.to_bundle().unwrap()).unwrap();
    for seed in [0, 900_000, 2_000_000] {
        assert_eq!(generate(&real, seed, &SceneConfig::default()).unwrap().rgb, generate(&back, seed, &SceneConfig::default()).unwrap().rgb, "seed {seed}");
    }
}
