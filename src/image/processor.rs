//! HF image processors of the supported VLM families, PIL backend parity:
//! `CLIPImageProcessor` (shortest-edge resize, center crop), `SiglipImageProcessor`
//! (fixed-size resize) and `Idefics3ImageProcessor` (longest-edge resize,
//! resize to tile multiples, split into tiles + a downscaled global image).
//! Then rescale (`v · rescale_factor`, in f64 → f32) and normalise
//! (`(x − mean) / std` in f32), as numpy does in transformers'
//! `image_transforms.rescale` / `normalize`.
//!
//! Every tile carries a [`TileGeometry`]: the affine map from tile pixels to
//! pixels of the ORIGINAL image, from which each visual token's rectangle is
//! computed.

use serde_json::Value;

use super::resample::{resize, Filter};
use super::{ImageError, RgbImage};

/// `Idefics3ImageProcessor`'s absolute bound on the resized longest edge.
const IDEFICS3_MAX_IMAGE_SIZE: u32 = 4096;
/// Sanity bound on any configured size (pixels per side).
const MAX_CONFIG_SIDE: u32 = 8192;

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];

/// How the image is resized and cut into tiles.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorKind {
    /// `CLIPImageProcessor`: resize so the shortest edge is `shortest_edge`
    /// (or to a fixed `size` when given as height/width), then center crop.
    Clip { resize: ResizeTo, crop: Option<(u32, u32)> },
    /// `SiglipImageProcessor`: resize to a fixed `(height, width)`.
    Siglip { size: (u32, u32) },
    /// `Idefics3ImageProcessor`: longest edge to `longest_edge`, then (with
    /// splitting) up to multiples of `tile` and cut into `tile × tile` tiles
    /// plus the whole image resized to `tile × tile`; without splitting,
    /// resize to `tile × tile`.
    Idefics3 { longest_edge: Option<u32>, tile: u32, split: bool },
}

/// Target of a resize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTo {
    /// Keep the aspect ratio; the shorter edge becomes this.
    ShortestEdge(u32),
    /// Exact `(height, width)`.
    Exact(u32, u32),
    /// No resize.
    None,
}

/// A configured image processor.
#[derive(Debug, Clone, PartialEq)]
pub struct Processor {
    pub kind: ProcessorKind,
    pub filter: Filter,
    /// `rescale_factor` when `do_rescale`.
    pub rescale: Option<f64>,
    /// `(mean, std)` when `do_normalize`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// Where a tile's pixels come from in the original image:
/// original `(x, y) = (x0 + sx · u, y0 + sy · v)` for tile pixel `(u, v)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileGeometry {
    /// Tile size in pixels.
    pub width: u32,
    pub height: u32,
    pub x0: f64,
    pub y0: f64,
    pub sx: f64,
    pub sy: f64,
    /// `Some((row, col))` for a split tile, `None` for a whole-image tile
    /// (single image or Idefics3's global image).
    pub grid: Option<(u32, u32)>,
}

impl TileGeometry {
    /// The original-image rectangle `[x0, y0, x1, y1)` of the tile pixel
    /// rectangle `[u0, v0, u1, v1)`, clipped to the original image.
    pub fn rect(&self, u0: f64, v0: f64, u1: f64, v1: f64, orig: (u32, u32)) -> [f32; 4] {
        let (w, h) = (orig.0 as f64, orig.1 as f64);
        let cx = |x: f64| x.clamp(0.0, w) as f32;
        let cy = |y: f64| y.clamp(0.0, h) as f32;
        [
            cx(self.x0 + self.sx * u0),
            cy(self.y0 + self.sy * v0),
            cx(self.x0 + self.sx * u1),
            cy(self.y0 + self.sy * v1),
        ]
    }
}

/// The processor's output for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Original image size `(width, height)`.
    pub original: (u32, u32),
    /// Tile size (all tiles share it).
    pub width: u32,
    pub height: u32,
    /// Row-major `[tiles, 3, height, width]` f32.
    pub pixel_values: Vec<f32>,
    /// One entry per tile, in processor order (split tiles row-major, then
    /// the global image).
    pub tiles: Vec<TileGeometry>,
    /// Idefics3 split grid (`0, 0` when not split).
    pub rows: u32,
    pub cols: u32,
}

impl Preprocessed {
    /// Number of tiles.
    pub fn num_tiles(&self) -> usize {
        self.tiles.len()
    }

    /// Pixel values of tile `i`, `[3, height, width]`.
    pub fn tile(&self, i: usize) -> Option<&[f32]> {
        let n = 3 * self.width as usize * self.height as usize;
        self.pixel_values.get(i * n..(i + 1) * n)
    }
}

fn cfg_err(msg: impl Into<String>) -> ImageError {
    ImageError::Config(msg.into())
}

fn get_bool(v: &Value, key: &str, default: bool) -> Result<bool, ImageError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(cfg_err(format!("`{key}` must be true or false, got {other}"))),
    }
}

fn get_side(v: &Value, key: &str) -> Result<Option<u32>, ImageError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => {
            let n = x
                .as_u64()
                .ok_or_else(|| cfg_err(format!("`{key}` must be a positive integer, got {x}")))?;
            if n == 0 || n > MAX_CONFIG_SIDE as u64 {
                return Err(cfg_err(format!("`{key}` = {n} is out of range 1..={MAX_CONFIG_SIDE}")));
            }
            Ok(Some(n as u32))
        }
    }
}

fn get_triple(v: &Value, key: &str, default: [f64; 3]) -> Result<[f64; 3], ImageError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            Ok([x; 3])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0.0; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x
                    .as_f64()
                    .ok_or_else(|| cfg_err(format!("`{key}` must hold numbers, got {x}")))?;
            }
            Ok(out)
        }
        Some(other) => Err(cfg_err(format!("`{key}` must be 3 numbers (RGB), got {other}"))),
    }
}

impl Processor {
    /// From the `image_processor` object of `processor_config.json` or the
    /// whole `preprocessor_config.json` (HF names and class defaults).
    pub fn from_hf_json(v: &Value) -> Result<Self, ImageError> {
        let v = v.get("image_processor").unwrap_or(v);
        let ty = v
            .get("image_processor_type")
            .and_then(Value::as_str)
            .ok_or_else(|| cfg_err("`image_processor_type` is missing"))?;
        let base = ty.trim_end_matches("Fast").trim_end_matches("Pil");
        let (kind, default_filter, default_mean, default_std) = match base {
            "CLIPImageProcessor" | "LlavaImageProcessor" => {
                let size = v.get("size");
                let resize = if !get_bool(v, "do_resize", true)? {
                    ResizeTo::None
                } else {
                    match size {
                        None | Some(Value::Null) => ResizeTo::ShortestEdge(224),
                        Some(Value::Number(_)) => {
                            ResizeTo::ShortestEdge(get_side(v, "size")?.unwrap_or(224))
                        }
                        Some(s) => match (get_side(s, "shortest_edge")?, get_side(s, "height")?, get_side(s, "width")?) {
                            (Some(e), None, None) => {
                                if s.get("longest_edge").is_some_and(|x| !x.is_null()) {
                                    return Err(cfg_err("`size` with both shortest_edge and longest_edge is not supported"));
                                }
                                ResizeTo::ShortestEdge(e)
                            }
                            (None, Some(h), Some(w)) => ResizeTo::Exact(h, w),
                            _ => return Err(cfg_err(format!("`size` must be {{shortest_edge}} or {{height, width}}, got {s}"))),
                        },
                    }
                };
                let crop = if get_bool(v, "do_center_crop", true)? {
                    match v.get("crop_size") {
                        None | Some(Value::Null) => Some((224, 224)),
                        Some(Value::Number(_)) => {
                            let c = get_side(v, "crop_size")?.unwrap_or(224);
                            Some((c, c))
                        }
                        Some(c) => match (get_side(c, "height")?, get_side(c, "width")?) {
                            (Some(h), Some(w)) => Some((h, w)),
                            _ => return Err(cfg_err(format!("`crop_size` must be {{height, width}}, got {c}"))),
                        },
                    }
                } else {
                    None
                };
                if get_bool(v, "do_pad", false)? {
                    return Err(cfg_err("`do_pad` is not supported for CLIP-style processors"));
                }
                (ProcessorKind::Clip { resize, crop }, 3, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
            }
            "SiglipImageProcessor" => {
                if !get_bool(v, "do_resize", true)? {
                    return Err(cfg_err("SigLIP processor with do_resize = false is not supported (the vision tower needs a fixed size)"));
                }
                let size = match v.get("size") {
                    None | Some(Value::Null) => (224, 224),
                    Some(s) => match (get_side(s, "height")?, get_side(s, "width")?) {
                        (Some(h), Some(w)) => (h, w),
                        _ => return Err(cfg_err(format!("SigLIP `size` must be {{height, width}}, got {s}"))),
                    },
                };
                (ProcessorKind::Siglip { size }, 3, IMAGENET_STANDARD, IMAGENET_STANDARD)
            }
            "Idefics3ImageProcessor" | "SmolVLMImageProcessor" => {
                let longest_edge = if get_bool(v, "do_resize", true)? {
                    match v.get("size") {
                        None | Some(Value::Null) => Some(4 * 364),
                        Some(s) => Some(get_side(s, "longest_edge")?.ok_or_else(|| {
                            cfg_err(format!("Idefics3 `size` must be {{longest_edge}}, got {s}"))
                        })?),
                    }
                } else {
                    None
                };
                let tile = match v.get("max_image_size") {
                    None | Some(Value::Null) => 364,
                    Some(s) => get_side(s, "longest_edge")?.ok_or_else(|| {
                        cfg_err(format!("Idefics3 `max_image_size` must be {{longest_edge}}, got {s}"))
                    })?,
                };
                let split = get_bool(v, "do_image_splitting", true)?;
                (ProcessorKind::Idefics3 { longest_edge, tile, split }, 1, IMAGENET_STANDARD, IMAGENET_STANDARD)
            }
            other => {
                return Err(cfg_err(format!(
                    "image processor `{other}` is not supported (supported: CLIPImageProcessor, SiglipImageProcessor, Idefics3ImageProcessor)"
                )))
            }
        };
        let filter = match v.get("resample") {
            None | Some(Value::Null) => Filter::from_pil(default_filter)?,
            Some(x) => Filter::from_pil(
                x.as_i64().ok_or_else(|| cfg_err(format!("`resample` must be an integer, got {x}")))?,
            )?,
        };
        let rescale = if get_bool(v, "do_rescale", true)? {
            let f = match v.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| cfg_err(format!("`rescale_factor` must be a number, got {x}")))?,
            };
            if !(f.is_finite() && f > 0.0) {
                return Err(cfg_err(format!("`rescale_factor` = {f} must be positive")));
            }
            Some(f)
        } else {
            None
        };
        let normalize = if get_bool(v, "do_normalize", true)? {
            let mean = get_triple(v, "image_mean", default_mean)?;
            let std = get_triple(v, "image_std", default_std)?;
            if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s != 0.0)) {
                return Err(cfg_err(format!(
                    "`image_mean` {mean:?} / `image_std` {std:?} must be finite with a non-zero std"
                )));
            }
            Some((mean.map(|m| m as f32), std.map(|s| s as f32)))
        } else {
            None
        };
        Ok(Self { kind, filter, rescale, normalize })
    }

    /// The fixed `(height, width)` of every output tile, when the config fixes it.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match &self.kind {
            ProcessorKind::Clip { crop: Some(c), .. } => Some(*c),
            ProcessorKind::Clip { resize: ResizeTo::Exact(h, w), .. } => Some((*h, *w)),
            ProcessorKind::Clip { .. } => None,
            ProcessorKind::Siglip { size } => Some(*size),
            ProcessorKind::Idefics3 { tile, .. } => Some((*tile, *tile)),
        }
    }

    /// Runs the processor on one RGB image.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Preprocessed, ImageError> {
        if img.width == 0 || img.height == 0 {
            return Err(ImageError::Empty { width: img.width, height: img.height });
        }
        let orig = (img.width, img.height);
        let (w0, h0) = (img.width as f64, img.height as f64);
        // (pixels, geometry) per tile.
        let mut tiles: Vec<(RgbImage, TileGeometry)> = Vec::new();
        let (mut rows, mut cols) = (0, 0);
        match &self.kind {
            ProcessorKind::Clip { resize: rs, crop } => {
                let r = match *rs {
                    ResizeTo::None => img.clone(),
                    ResizeTo::Exact(h, w) => resize(img, w, h, self.filter)?,
                    ResizeTo::ShortestEdge(e) => {
                        let (h, w) = shortest_edge_size(img.height, img.width, e)?;
                        resize(img, w, h, self.filter)?
                    }
                };
                let (sx, sy) = (w0 / r.width as f64, h0 / r.height as f64);
                let (t, (dx, dy)) = match crop {
                    Some((ch, cw)) => center_crop(&r, *ch, *cw)?,
                    None => (r.clone(), (0, 0)),
                };
                let g = TileGeometry {
                    width: t.width,
                    height: t.height,
                    x0: dx as f64 * sx,
                    y0: dy as f64 * sy,
                    sx,
                    sy,
                    grid: None,
                };
                tiles.push((t, g));
            }
            ProcessorKind::Siglip { size: (h, w) } => {
                let t = resize(img, *w, *h, self.filter)?;
                let g = whole(&t, orig);
                tiles.push((t, g));
            }
            ProcessorKind::Idefics3 { longest_edge, tile, split } => {
                let tile = *tile;
                let r1 = match longest_edge {
                    Some(e) => {
                        let (h, w) = idefics3_longest_edge_size(img.height, img.width, *e);
                        resize(img, w, h, self.filter)?
                    }
                    None => img.clone(),
                };
                if *split {
                    let (h2, w2) = idefics3_tile_multiple_size(r1.height, r1.width, tile)?;
                    let r2 = resize(&r1, w2, h2, self.filter)?;
                    if h2 > tile || w2 > tile {
                        rows = (h2 - tile) / tile + 1;
                        cols = (w2 - tile) / tile + 1;
                        let (sx, sy) = (w0 / w2 as f64, h0 / h2 as f64);
                        for r in 0..rows {
                            for c in 0..cols {
                                let t = crop(&r2, c * tile, r * tile, tile, tile)?;
                                let g = TileGeometry {
                                    width: tile,
                                    height: tile,
                                    x0: (c * tile) as f64 * sx,
                                    y0: (r * tile) as f64 * sy,
                                    sx,
                                    sy,
                                    grid: Some((r, c)),
                                };
                                tiles.push((t, g));
                            }
                        }
                        let t = resize(&r2, tile, tile, self.filter)?;
                        let g = whole(&t, orig);
                        tiles.push((t, g));
                    } else {
                        let g = whole(&r2, orig);
                        tiles.push((r2, g));
                    }
                } else {
                    let t = resize(&r1, tile, tile, self.filter)?;
                    let g = whole(&t, orig);
                    tiles.push((t, g));
                }
            }
        }
        let (tw, th) = match tiles.first() {
            Some((t, _)) => (t.width, t.height),
            None => return Err(cfg_err("the processor produced no tile")),
        };
        let n = tw as usize * th as usize;
        let mut pixel_values = Vec::with_capacity(tiles.len() * 3 * n);
        let mut geoms = Vec::with_capacity(tiles.len());
        for (t, g) in &tiles {
            if (t.width, t.height) != (tw, th) {
                return Err(cfg_err("tiles of different sizes (internal error)"));
            }
            // HWC u8 → CHW f32, rescale then normalise.
            for ch in 0..3 {
                for i in 0..n {
                    pixel_values.push(self.value(t.data[i * 3 + ch], ch));
                }
            }
            geoms.push(*g);
        }
        Ok(Preprocessed { original: orig, width: tw, height: th, pixel_values, tiles: geoms, rows, cols })
    }

    /// One channel value: `f32(v · rescale)` then `(x − mean) / std` in f32.
    #[inline]
    fn value(&self, v: u8, ch: usize) -> f32 {
        let x = match self.rescale {
            Some(f) => (v as f64 * f) as f32,
            None => v as f32,
        };
        match &self.normalize {
            Some((m, s)) => (x - m[ch]) / s[ch],
            None => x,
        }
    }
}

fn whole(t: &RgbImage, orig: (u32, u32)) -> TileGeometry {
    TileGeometry {
        width: t.width,
        height: t.height,
        x0: 0.0,
        y0: 0.0,
        sx: orig.0 as f64 / t.width as f64,
        sy: orig.1 as f64 / t.height as f64,
        grid: None,
    }
}

/// HF `get_resize_output_image_size(default_to_square=False)`: `(height, width)`.
fn shortest_edge_size(h: u32, w: u32, e: u32) -> Result<(u32, u32), ImageError> {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (e as f64 * long as f64 / short as f64) as u64;
    if new_long == 0 || new_long > IDEFICS3_MAX_IMAGE_SIZE as u64 * 4 {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            limit: format!("an aspect ratio that keeps the long edge at most {} after resizing", IDEFICS3_MAX_IMAGE_SIZE * 4),
        });
    }
    let new_long = new_long as u32;
    Ok(if w <= h { (new_long, e) } else { (e, new_long) })
}

/// Idefics3 `get_resize_output_image_size`: longest edge to `max_len`
/// (even short edge), then below `MAX_IMAGE_SIZE`. Returns `(height, width)`.
fn idefics3_longest_edge_size(h: u32, w: u32, max_len: u32) -> (u32, u32) {
    let aspect = w as f64 / h as f64;
    let (mut h, mut w) = if w >= h {
        let w = max_len as i64;
        let mut h = (w as f64 / aspect) as i64;
        if h % 2 != 0 {
            h += 1;
        }
        (h, w)
    } else {
        let h = max_len as i64;
        let mut w = (h as f64 * aspect) as i64;
        if w % 2 != 0 {
            w += 1;
        }
        (h, w)
    };
    h = h.max(1);
    w = w.max(1);
    // _resize_output_size_scale_below_upper_bound
    let m = IDEFICS3_MAX_IMAGE_SIZE as i64;
    let aspect = w as f64 / h as f64;
    if w >= h && w > m {
        w = m;
        h = (w as f64 / aspect) as i64;
    } else if h > w && h > m {
        h = m;
        w = (h as f64 * aspect) as i64;
    }
    (h.max(1) as u32, w.max(1) as u32)
}

/// Idefics3 `resize_for_vision_encoder`: both sides up to multiples of `tile`.
fn idefics3_tile_multiple_size(h: u32, w: u32, tile: u32) -> Result<(u32, u32), ImageError> {
    let aspect = w as f64 / h as f64;
    let t = tile as f64;
    let (h, w) = if w >= h {
        let w2 = (w as f64 / t).ceil() * t;
        let h2 = (w2 / aspect).trunc();
        ((h2 / t).ceil() * t, w2)
    } else {
        let h2 = (h as f64 / t).ceil() * t;
        let w2 = (h2 * aspect).trunc();
        (h2, (w2 / t).ceil() * t)
    };
    let max = (IDEFICS3_MAX_IMAGE_SIZE + tile) as f64;
    if !(h >= t && w >= t && h <= max && w <= max) {
        return Err(ImageError::TooLarge {
            width: w as u32,
            height: h as u32,
            limit: format!("{} pixels per side for Idefics3 tiling", IDEFICS3_MAX_IMAGE_SIZE + tile),
        });
    }
    Ok((h as u32, w as u32))
}

/// HF `center_crop` (zero padding when the image is smaller): the crop and
/// the offset `(dx, dy)` of its top-left corner in the input (may be negative).
fn center_crop(img: &RgbImage, ch: u32, cw: u32) -> Result<(RgbImage, (i64, i64)), ImageError> {
    let dy = (img.height as i64 - ch as i64).div_euclid(2);
    let dx = (img.width as i64 - cw as i64).div_euclid(2);
    let mut out = vec![0u8; ch as usize * cw as usize * 3];
    for y in 0..ch as i64 {
        let sy = y + dy;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..cw as i64 {
            let sx = x + dx;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let s = (sy as usize * img.width as usize + sx as usize) * 3;
            let d = (y as usize * cw as usize + x as usize) * 3;
            out[d..d + 3].copy_from_slice(&img.data[s..s + 3]);
        }
    }
    Ok((RgbImage::from_raw(cw, ch, out)?, (dx, dy)))
}

/// Plain crop `[x, x+w) × [y, y+h)` (must lie inside the image).
fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> Result<RgbImage, ImageError> {
    if x + w > img.width || y + h > img.height {
        return Err(cfg_err("tile outside the resized image (internal error)"));
    }
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for r in y..y + h {
        let s = (r as usize * img.width as usize + x as usize) * 3;
        out.extend_from_slice(&img.data[s..s + w as usize * 3]);
    }
    RgbImage::from_raw(w, h, out)
}
