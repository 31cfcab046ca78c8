//! `latentlens eval --judge export`: the paper's LLM-judge inputs for every
//! sampled patch, so a user with an LLM judge can run the paper's protocol:
//! the image with a red box around the 3×3 cell region centred on the patch,
//! the crop of that region, the top-k candidate words per layer and lens, and
//! the prompt. Files: `judge/NNNN_box.png`, `judge/NNNN_crop.png`,
//! `judge/judge.jsonl` (one line per patch).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use latentlens::eval::scenes::Scene;
use latentlens::lens::Neighbour;
use serde_json::json;

/// The judge prompt (after the paper's protocol: words that describe the
/// boxed region concretely, abstractly, or the image globally).
pub const PROMPT: &str = "You see an image with a red box, and a crop of the boxed region. \
Below are candidate words that a method produced for the center of the box. \
For each word, decide whether it describes something in the boxed region: an object or part of it \
(concrete), a property such as its colour, shape or texture (abstract), or the image as a whole (global). \
Answer with a JSON object {\"interpretable\": true|false, \"concrete\": [...], \"abstract\": [...], \"global\": [...]}.\n\
Candidate words: ";

type Results<'a> = BTreeMap<usize, BTreeMap<&'a str, Vec<(Vec<Neighbour>, Option<String>)>>>;

pub fn write(out: &Path, scenes: &[Scene], samples: &[(usize, usize)], results: &Results, k: usize) -> anyhow::Result<()> {
    let dir = out.join("judge");
    std::fs::create_dir_all(&dir)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("judge.jsonl"))?);
    for (i, &(si, cell)) in samples.iter().enumerate() {
        let sc = &scenes[si];
        let g = sc.grid as usize;
        let s = sc.size as usize;
        let cs = s / g;
        let (r, c) = (cell / g, cell % g);
        let (r0, r1) = (r.saturating_sub(1), (r + 2).min(g));
        let (c0, c1) = (c.saturating_sub(1), (c + 2).min(g));
        let (x0, y0, x1, y1) = (c0 * cs, r0 * cs, c1 * cs, r1 * cs);
        let mut boxed = sc.rgb.clone();
        for y in y0..y1 {
            for x in x0..x1 {
                let edge = x < x0 + 2 || x + 2 >= x1 || y < y0 + 2 || y + 2 >= y1;
                if edge {
                    boxed[(y * s + x) * 3..(y * s + x) * 3 + 3].copy_from_slice(&[255, 0, 0]);
                }
            }
        }
        let mut crop = Vec::with_capacity((x1 - x0) * (y1 - y0) * 3);
        for y in y0..y1 {
            crop.extend_from_slice(&sc.rgb[(y * s + x0) * 3..(y * s + x1) * 3]);
        }
        let (bn, cn) = (format!("{i:04}_box.png"), format!("{i:04}_crop.png"));
        image::save_buffer(dir.join(&bn), &boxed, s as u32, s as u32, image::ExtendedColorType::Rgb8)?;
        image::save_buffer(dir.join(&cn), &crop, (x1 - x0) as u32, (y1 - y0) as u32, image::ExtendedColorType::Rgb8)?;
        let cands: BTreeMap<String, BTreeMap<&str, Vec<String>>> = results
            .iter()
            .map(|(l, per)| {
                let m = per
                    .iter()
                    .map(|(m, v)| (*m, v[i].0.iter().take(k).map(|n| n.word.clone()).collect::<Vec<_>>()))
                    .collect();
                (l.to_string(), m)
            })
            .collect();
        let p = &sc.patches[cell];
        writeln!(
            f,
            "{}",
            json!({"id": i, "image_with_box": bn, "crop": cn, "scene_seed": sc.seed, "row": r, "col": c,
                   "box": [x0, y0, x1, y1], "prompt": PROMPT, "candidates": cands,
                   "ground_truth": {"objects": p.objects, "background": p.background}})
        )?;
    }
    Ok(())
}
