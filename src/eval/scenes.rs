//! Synthetic scenes with per-patch ground truth: the training data of the
//! controlled VLM's connector and the ground truth of `latentlens eval`.
//!
//! A scene is a square RGB image (224 px by default) of drawn objects
//! (Google Noto emoji artwork from the npm package `emoji-datasource-google`;
//! the package is MIT, the Noto images are Apache-2.0 as its README states)
//! placed at random positions, sizes and counts on a background that is a
//! solid colour, a two-colour gradient, stripes or a checkerboard. Each scene
//! comes with a caption from varied templates (objects, counts, the
//! background's colours, a spatial relation) and, for every cell of the
//! model's patch grid, the object kinds whose *visible* pixels cover at
//! least [`COVER_FRACTION`] of the cell and the background colour name(s)
//! seen there.
//!
//! Pure Rust, no file system in the core ([`Catalog::from_emoji`] takes a
//! closure that returns PNG bytes), so it also builds for wasm32 and the page
//! can generate samples. Deterministic: the same catalog and seed give the
//! same scene, bit for bit, on every platform (integer and f32 arithmetic in a
//! fixed order, a splitmix64 generator).

use std::collections::BTreeSet;

use super::EvalError;

/// Fraction of a grid cell an object's visible pixels must cover for the
/// cell to count as showing that object.
pub const COVER_FRACTION: f32 = 0.15;

/// The object vocabulary: (emoji `short_name` in `emoji.json`, caption noun).
/// Concrete nouns with a WordNet noun sense; one emoji per noun.
pub const VOCABULARY: &[(&str, &str)] = &[
    // animals
    ("dog2", "dog"), ("cat2", "cat"), ("mouse2", "mouse"), ("rabbit2", "rabbit"), ("cow2", "cow"),
    ("pig2", "pig"), ("racehorse", "horse"), ("tiger2", "tiger"), ("monkey", "monkey"),
    ("chicken", "chicken"), ("penguin", "penguin"), ("bird", "bird"), ("frog", "frog"),
    ("turtle", "turtle"), ("snake", "snake"), ("octopus", "octopus"), ("fish", "fish"),
    ("whale2", "whale"), ("dolphin", "dolphin"), ("elephant", "elephant"), ("camel", "camel"),
    ("sheep", "sheep"), ("goat", "goat"), ("bear", "bear"), ("koala", "koala"), ("panda_face", "panda"),
    ("lion_face", "lion"), ("owl", "owl"), ("duck", "duck"), ("bee", "bee"), ("butterfly", "butterfly"),
    ("snail", "snail"), ("crab", "crab"), ("shark", "shark"), ("giraffe_face", "giraffe"),
    ("zebra_face", "zebra"), ("deer", "deer"), ("hedgehog", "hedgehog"), ("fox_face", "fox"),
    ("wolf", "wolf"), ("gorilla", "gorilla"), ("kangaroo", "kangaroo"), ("parrot", "parrot"),
    ("flamingo", "flamingo"), ("swan", "swan"), ("crocodile", "crocodile"), ("spider", "spider"),
    ("ladybug", "ladybug"),
    // food
    ("apple", "apple"), ("pear", "pear"), ("peach", "peach"), ("cherries", "cherry"),
    ("strawberry", "strawberry"), ("grapes", "grape"), ("watermelon", "watermelon"), ("lemon", "lemon"),
    ("pineapple", "pineapple"), ("coconut", "coconut"), ("tomato", "tomato"), ("eggplant", "eggplant"),
    ("carrot", "carrot"), ("corn", "corn"), ("cucumber", "cucumber"), ("broccoli", "broccoli"),
    ("mushroom", "mushroom"), ("bread", "bread"), ("croissant", "croissant"), ("pretzel", "pretzel"),
    ("cheese_wedge", "cheese"), ("egg", "egg"), ("hamburger", "hamburger"), ("pizza", "pizza"),
    ("taco", "taco"), ("popcorn", "popcorn"), ("doughnut", "doughnut"), ("cookie", "cookie"),
    ("cake", "cake"), ("lollipop", "lollipop"), ("banana", "banana"), ("avocado", "avocado"),
    ("potato", "potato"), ("onion", "onion"), ("teapot", "teapot"), ("coffee", "cup"),
    ("wine_glass", "glass"),
    // vehicles, things, plants, nature
    ("car", "car"), ("taxi", "taxi"), ("bus", "bus"), ("truck", "truck"), ("bike", "bicycle"),
    ("airplane", "airplane"), ("rocket", "rocket"), ("helicopter", "helicopter"), ("boat", "boat"),
    ("ship", "ship"), ("tractor", "tractor"), ("ambulance", "ambulance"), ("scooter", "scooter"),
    ("house", "house"), ("tent", "tent"), ("umbrella", "umbrella"), ("guitar", "guitar"),
    ("trumpet", "trumpet"), ("violin", "violin"), ("drum_with_drumsticks", "drum"),
    ("saxophone", "saxophone"), ("bell", "bell"), ("key", "key"), ("hammer", "hammer"),
    ("wrench", "wrench"), ("lock", "lock"), ("bulb", "bulb"), ("book", "book"), ("pencil2", "pencil"),
    ("alarm_clock", "clock"), ("hourglass", "hourglass"), ("watch", "watch"), ("iphone", "phone"),
    ("computer", "laptop"), ("camera", "camera"), ("tv", "television"), ("radio", "radio"),
    ("balloon", "balloon"), ("gift", "gift"), ("soccer", "ball"), ("trophy", "trophy"),
    ("crown", "crown"), ("ring", "ring"), ("tophat", "hat"), ("necktie", "tie"), ("shirt", "shirt"),
    ("dress", "dress"), ("shoe", "shoe"), ("handbag", "handbag"), ("sunflower", "sunflower"),
    ("rose", "rose"), ("tulip", "tulip"), ("cactus", "cactus"), ("evergreen_tree", "tree"),
    ("maple_leaf", "leaf"), ("star", "star"), ("cloud", "cloud"), ("snowflake", "snowflake"),
    ("snowman", "snowman"), ("fire", "fire"), ("rainbow", "rainbow"), ("anchor", "anchor"),
    ("candle", "candle"), ("chair", "chair"), ("bed", "bed"), ("toilet", "toilet"),
    ("bathtub", "bathtub"), ("door", "door"), ("broom", "broom"), ("knife", "knife"),
    ("spoon", "spoon"), ("pill", "pill"), ("syringe", "syringe"), ("microscope", "microscope"),
    ("telescope", "telescope"), ("magnet", "magnet"), ("compass", "compass"), ("shield", "shield"),
    ("axe", "axe"), ("bomb", "bomb"), ("envelope", "envelope"), ("package", "package"),
    ("mailbox", "mailbox"), ("flashlight", "flashlight"), ("battery", "battery"), ("kite", "kite"),
    ("skateboard", "skateboard"), ("basket", "basket"), ("bucket", "bucket"), ("ladder", "ladder"),
];

/// Named background colours (sRGB), jittered per scene.
pub const COLOURS: &[(&str, [u8; 3])] = &[
    ("red", [210, 40, 40]),
    ("green", [50, 160, 70]),
    ("blue", [40, 80, 200]),
    ("yellow", [240, 210, 50]),
    ("orange", [245, 140, 30]),
    ("purple", [130, 60, 170]),
    ("pink", [240, 150, 190]),
    ("brown", [130, 80, 40]),
    ("gray", [128, 128, 128]),
    ("white", [245, 245, 245]),
    ("black", [25, 25, 25]),
];

/// First bytes of a [`Catalog::to_bundle`] file.
pub const BUNDLE_MAGIC: &[u8; 8] = b"LLSCENE1";

/// PNG bytes of a square `side × side` image (`Rgb8` or `Rgba8`).
pub fn encode_png(pixels: &[u8], side: u32, color: image::ExtendedColorType) -> Result<Vec<u8>, EvalError> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(pixels, side, side, color)
        .map_err(|e| EvalError::Input(format!("PNG encoding: {e}")))?;
    Ok(out)
}

/// Largest artwork side accepted (pixels).
const MAX_ART_SIDE: u32 = 512;

/// One drawable object kind.
#[derive(Debug, Clone)]
pub struct ObjectKind {
    /// Emoji `short_name`.
    pub short_name: String,
    /// Caption noun (singular).
    pub noun: String,
    /// Plural noun.
    pub plural: String,
    /// Artwork side (square).
    pub side: u32,
    /// Artwork `[side × side × 4]` RGBA.
    pub rgba: Vec<u8>,
}

/// The object kinds that could be loaded, and those skipped (with why).
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Loaded kinds, in [`VOCABULARY`] order.
    pub kinds: Vec<ObjectKind>,
    /// `(short_name, reason)` of vocabulary entries that were skipped.
    pub skipped: Vec<(String, String)>,
}

/// English plural of a caption noun.
pub fn plural(noun: &str) -> String {
    match noun {
        "mouse" => "mice".into(),
        "sheep" | "deer" | "fish" | "corn" | "bread" | "popcorn" | "broccoli" | "cheese" | "fire" => noun.into(),
        "knife" => "knives".into(),
        "leaf" => "leaves".into(),
        "wolf" => "wolves".into(),
        "cactus" => "cacti".into(),
        "tomato" | "potato" => format!("{noun}es"),
        _ if noun.ends_with("ch") || noun.ends_with("sh") || noun.ends_with('s') || noun.ends_with('x') => {
            format!("{noun}es")
        }
        _ if noun.ends_with('y') && !noun.ends_with("ey") && !noun.ends_with("ay") && !noun.ends_with("oy") => {
            format!("{}ies", &noun[..noun.len() - 1])
        }
        _ => format!("{noun}s"),
    }
}

impl Catalog {
    /// Builds the catalog from the package's `emoji.json` and a function
    /// returning the bytes of `img/google/64/<image>` (PNG), or `None` when
    /// the file is missing. Vocabulary entries whose name is not in
    /// `emoji.json`, that have no Google image, or whose PNG is missing or
    /// unreadable are skipped and listed in [`Catalog::skipped`].
    pub fn from_emoji(
        emoji_json: &[u8],
        mut read_png: impl FnMut(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, EvalError> {
        let list: serde_json::Value = serde_json::from_slice(emoji_json)
            .map_err(|e| EvalError::Assets(format!("emoji.json is not valid JSON ({e}): re-fetch emoji-datasource-google")))?;
        let list = list
            .as_array()
            .ok_or_else(|| EvalError::Assets("emoji.json is not a JSON array: not the emoji-datasource file".into()))?;
        let mut kinds = Vec::new();
        let mut skipped = Vec::new();
        for &(short, noun) in VOCABULARY {
            let entry = list.iter().find(|e| {
                e.get("short_names")
                    .and_then(|s| s.as_array())
                    .is_some_and(|a| a.iter().any(|n| n.as_str() == Some(short)))
            });
            let Some(entry) = entry else {
                skipped.push((short.to_string(), "not in emoji.json".to_string()));
                continue;
            };
            if entry.get("has_img_google").and_then(|v| v.as_bool()) != Some(true) {
                skipped.push((short.to_string(), "no Google image".to_string()));
                continue;
            }
            let Some(image) = entry.get("image").and_then(|v| v.as_str()) else {
                skipped.push((short.to_string(), "no `image` field".to_string()));
                continue;
            };
            let Some(bytes) = read_png(image) else {
                skipped.push((short.to_string(), format!("artwork {image} missing")));
                continue;
            };
            match decode_rgba(&bytes) {
                Ok((side, rgba)) => kinds.push(ObjectKind {
                    short_name: short.to_string(),
                    noun: noun.to_string(),
                    plural: plural(noun),
                    side,
                    rgba,
                }),
                Err(why) => skipped.push((short.to_string(), format!("artwork {image}: {why}"))),
            }
        }
        if kinds.is_empty() {
            return Err(EvalError::Assets(format!(
                "no object artwork could be loaded ({} skipped, first: {:?}): fetch emoji-datasource-google with ./build.sh assets",
                skipped.len(),
                skipped.first()
            )));
        }
        Ok(Self { kinds, skipped })
    }

    /// Loads from an unpacked `emoji-datasource-google` package directory
    /// (`emoji.json`, `img/google/64/*.png`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, EvalError> {
        let json = std::fs::read(dir.join("emoji.json")).map_err(|e| {
            EvalError::Assets(format!("{}: {e}; fetch it with ./build.sh assets", dir.join("emoji.json").display()))
        })?;
        let img = dir.join("img/google/64");
        Self::from_emoji(&json, |name| {
            if name.contains('/') || name.contains("..") {
                return None;
            }
            std::fs::read(img.join(name)).ok()
        })
    }

    /// The artwork in one file for the browser (`latentlens scenes --bundle`): magic
    /// [`BUNDLE_MAGIC`], `u32` count, then per kind `u16` + short name, `u16` + noun,
    /// `u32` + PNG bytes (little-endian lengths, UTF-8 names).
    pub fn to_bundle(&self) -> Result<Vec<u8>, EvalError> {
        let mut out = BUNDLE_MAGIC.to_vec();
        out.extend_from_slice(&(self.kinds.len() as u32).to_le_bytes());
        for k in &self.kinds {
            let png = encode_png(&k.rgba, k.side, image::ExtendedColorType::Rgba8)?;
            for s in [&k.short_name, &k.noun] {
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(&(png.len() as u32).to_le_bytes());
            out.extend_from_slice(&png);
        }
        Ok(out)
    }

    /// Reads a bundle written by [`Catalog::to_bundle`]; a truncated or foreign file is
    /// refused with what was wrong.
    pub fn from_bundle(bytes: &[u8]) -> Result<Self, EvalError> {
        let bad = |what: &str| EvalError::Assets(format!("scene artwork bundle: {what}: rebuild it with `latentlens scenes --bundle`"));
        let mut r = bytes.strip_prefix(BUNDLE_MAGIC.as_slice()).ok_or_else(|| bad("wrong magic (not a bundle)"))?;
        let mut take = |n: usize, what: &str| -> Result<&[u8], EvalError> {
            if r.len() < n {
                return Err(bad(&format!("truncated in {what}")));
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let le = |b: &[u8]| b.iter().rev().fold(0usize, |acc, &x| acc << 8 | x as usize);
        let n = le(take(4, "the count")?);
        if n == 0 || n > VOCABULARY.len() {
            return Err(bad(&format!("{n} kinds (expected 1..={})", VOCABULARY.len())));
        }
        let mut kinds = Vec::with_capacity(n);
        for i in 0..n {
            let mut name = |what: &str| -> Result<String, EvalError> {
                let len = le(take(2, what)?);
                String::from_utf8(take(len, what)?.to_vec()).map_err(|_| bad(&format!("kind {i}: {what} is not UTF-8")))
            };
            let (short_name, noun) = (name("short name")?, name("noun")?);
            let len = le(take(4, "PNG length")?);
            let (side, rgba) = decode_rgba(take(len, "PNG")?).map_err(|e| bad(&format!("kind {i} ({noun}): {e}")))?;
            kinds.push(ObjectKind { short_name, plural: plural(&noun), noun, side, rgba });
        }
        Ok(Self { kinds, skipped: Vec::new() })
    }

    /// Index of the kind with caption noun `noun`.
    pub fn kind_by_noun(&self, noun: &str) -> Option<usize> {
        self.kinds.iter().position(|k| k.noun == noun)
    }
}

fn decode_rgba(bytes: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).map_err(|e| e.to_string())?;
    let (w, h) = (img.width(), img.height());
    if w != h || w == 0 || w > MAX_ART_SIDE {
        return Err(format!("{w}x{h}: expected a square image of at most {MAX_ART_SIDE} px"));
    }
    Ok((w, img.to_rgba8().into_raw()))
}

/// Deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_B00C)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1).max(1) as u64)) as i64
    }
}

/// How the background is painted.
#[derive(Debug, Clone, PartialEq)]
pub enum Background {
    /// One colour.
    Solid(usize),
    /// Linear gradient from the first colour to the second; `vertical` =
    /// top→bottom, else left→right.
    Gradient(usize, usize, bool),
    /// Stripes of `period` px alternating two colours.
    Stripes(usize, usize, u32, bool),
    /// Checkerboard of `cell` px squares.
    Checker(usize, usize, u32),
}

impl Background {
    /// The caption phrase ("a red background", "a blue and white striped background", …).
    pub fn phrase(&self) -> String {
        let n = |i: usize| COLOURS.get(i).map_or("plain", |c| c.0);
        match *self {
            Background::Solid(a) => format!("{} {} background", article(n(a)), n(a)),
            Background::Gradient(a, b, _) => format!("{} {} to {} gradient background", article(n(a)), n(a), n(b)),
            Background::Stripes(a, b, _, _) => format!("a striped {} and {} background", n(a), n(b)),
            Background::Checker(a, b, _) => format!("{} {} and {} checkered background", article(n(a)), n(a), n(b)),
        }
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// One drawn object instance.
#[derive(Debug, Clone)]
pub struct PlacedObject {
    /// Index into [`Catalog::kinds`].
    pub kind: usize,
    /// Caption noun of the kind.
    pub noun: String,
    /// `[x0, y0, x1, y1)` in pixels.
    pub rect: [u32; 4],
}

/// Ground truth of one grid cell.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchTruth {
    /// Grid row and column.
    pub row: u32,
    pub col: u32,
    /// Caption nouns of the kinds covering ≥ [`COVER_FRACTION`] of the
    /// cell with visible pixels, most-covering first.
    pub objects: Vec<String>,
    /// Fraction of the cell covered by `objects[0]` (0 when none).
    pub top_cover: f32,
    /// Colour name(s) of the background visible in the cell.
    pub background: Vec<String>,
}

/// A generated scene.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The seed it was made from.
    pub seed: u64,
    /// Side in pixels (square).
    pub size: u32,
    /// `[size × size × 3]` RGB, row-major.
    pub rgb: Vec<u8>,
    /// The background.
    pub background: Background,
    /// Objects in drawing order (later ones on top).
    pub objects: Vec<PlacedObject>,
    /// The caption.
    pub caption: String,
    /// Ground truth per grid cell, row-major.
    pub patches: Vec<PatchTruth>,
    /// Grid side.
    pub grid: u32,
}

/// Scene size and ground-truth grid.
#[derive(Debug, Clone, Copy)]
pub struct SceneConfig {
    /// Image side in pixels.
    pub size: u32,
    /// Patch grid side (the model's).
    pub grid: u32,
}

impl Default for SceneConfig {
    /// 224 px, 7×7 grid: EfficientNet-Lite0's input and output grid.
    fn default() -> Self {
        Self { size: 224, grid: 7 }
    }
}

fn jitter(rng: &mut Rng, c: [u8; 3]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (o, v) in out.iter_mut().zip(c) {
        *o = (v as i64 + rng.range(-14, 14)).clamp(0, 255) as u8;
    }
    out
}

const COUNT_WORDS: [&str; 4] = ["zero", "one", "two", "three"];

/// Noun phrase for `count` objects of one kind ("a cat", "two cats").
fn noun_phrase(kind: &ObjectKind, count: usize) -> String {
    if count == 1 {
        format!("{} {}", article(&kind.noun), kind.noun)
    } else {
        format!("{} {}", COUNT_WORDS.get(count).copied().unwrap_or("several"), kind.plural)
    }
}

fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Generates scene `seed`.
pub fn generate(catalog: &Catalog, seed: u64, cfg: &SceneConfig) -> Result<Scene, EvalError> {
    let size = cfg.size;
    if !(32..=1024).contains(&size) || cfg.grid == 0 || size % cfg.grid != 0 {
        return Err(EvalError::Input(format!(
            "scene size {size} with grid {}: the size must be 32..=1024 and a multiple of the grid",
            cfg.grid
        )));
    }
    if catalog.kinds.is_empty() {
        return Err(EvalError::Assets("the object catalog is empty".into()));
    }
    let mut rng = Rng::new(seed);
    let s = size as usize;
    // Background.
    let nc = COLOURS.len();
    let a = rng.below(nc);
    let b = (a + 1 + rng.below(nc - 1)) % nc;
    let background = match rng.below(10) {
        0..=3 => Background::Solid(a),
        4..=6 => Background::Gradient(a, b, rng.below(2) == 0),
        7..=8 => Background::Stripes(a, b, 16 + 8 * rng.below(4) as u32, rng.below(2) == 0),
        _ => Background::Checker(a, b, 28 + 4 * rng.below(4) as u32),
    };
    let ca = jitter(&mut rng, COLOURS[a].1);
    let cb = jitter(&mut rng, COLOURS[b].1);
    // Per pixel: colour and which named colour (a or b) dominates there.
    let mut rgb = vec![0u8; s * s * 3];
    let mut bg_id = vec![0u8; s * s]; // 0 → a, 1 → b
    for y in 0..s {
        for x in 0..s {
            let (c, id) = match background {
                Background::Solid(_) => (ca, 0),
                Background::Gradient(_, _, vertical) => {
                    let t = if vertical { y } else { x } as f32 / (s - 1) as f32;
                    let mut c = [0u8; 3];
                    for k in 0..3 {
                        c[k] = (ca[k] as f32 * (1.0 - t) + cb[k] as f32 * t).round() as u8;
                    }
                    (c, u8::from(t >= 0.5))
                }
                Background::Stripes(_, _, period, vertical) => {
                    let v = if vertical { x } else { y } as u32;
                    if (v / period) % 2 == 0 {
                        (ca, 0)
                    } else {
                        (cb, 1)
                    }
                }
                Background::Checker(_, _, cell) => {
                    if ((x as u32 / cell) + (y as u32 / cell)) % 2 == 0 {
                        (ca, 0)
                    } else {
                        (cb, 1)
                    }
                }
            };
            rgb[(y * s + x) * 3..(y * s + x) * 3 + 3].copy_from_slice(&c);
            bg_id[y * s + x] = id;
        }
    }
    // Objects: 1–3 kinds, 1–3 instances each; instances are capped at 5 once the first kinds
    // are placed, but every chosen kind keeps one, so a scene has at most 6 (kept as is: the
    // committed connector was trained on scenes made by exactly this code).
    let n_kinds = 1 + rng.below(3);
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    while chosen.len() < n_kinds.min(catalog.kinds.len()) {
        let k = rng.below(catalog.kinds.len());
        if chosen.iter().all(|c| c.0 != k) {
            let count = match rng.below(10) {
                0..=6 => 1,
                7..=8 => 2,
                _ => 3,
            };
            chosen.push((k, count));
        }
    }
    let mut total = 0;
    for c in &mut chosen {
        c.1 = c.1.min(5 - total).max(1);
        total += c.1;
    }
    let many = total > 2;
    let mut objects: Vec<PlacedObject> = Vec::new();
    let mut label = vec![u16::MAX; s * s]; // visible object instance per pixel
    for &(k, count) in &chosen {
        for _ in 0..count {
            let (lo, hi) = if many { (s / 5, s * 2 / 5) } else { (s / 4, s / 2) };
            let side = rng.range(lo as i64, hi as i64) as usize;
            // A few tries to limit overlap with earlier objects.
            let mut best = (0usize, 0usize, usize::MAX);
            for _ in 0..8 {
                let x0 = rng.below(s - side + 1);
                let y0 = rng.below(s - side + 1);
                let overlap: usize = objects
                    .iter()
                    .map(|o| {
                        let ix = (x0 + side).min(o.rect[2] as usize).saturating_sub(x0.max(o.rect[0] as usize));
                        let iy = (y0 + side).min(o.rect[3] as usize).saturating_sub(y0.max(o.rect[1] as usize));
                        ix * iy
                    })
                    .sum();
                if overlap < best.2 {
                    best = (x0, y0, overlap);
                }
                if overlap == 0 {
                    break;
                }
            }
            let (x0, y0, _) = best;
            let inst = objects.len() as u16;
            draw(&catalog.kinds[k], &mut rgb, &mut label, s, x0, y0, side, inst);
            objects.push(PlacedObject {
                kind: k,
                noun: catalog.kinds[k].noun.clone(),
                rect: [x0 as u32, y0 as u32, (x0 + side) as u32, (y0 + side) as u32],
            });
        }
    }
    // Ground truth per cell.
    let g = cfg.grid as usize;
    let cell = s / g;
    let mut patches = Vec::with_capacity(g * g);
    for r in 0..g {
        for c in 0..g {
            let mut counts = vec![0usize; catalog.kinds.len()];
            let mut bg = [0usize; 2];
            for y in r * cell..(r + 1) * cell {
                for x in c * cell..(c + 1) * cell {
                    match label[y * s + x] {
                        u16::MAX => bg[bg_id[y * s + x] as usize] += 1,
                        i => counts[objects[i as usize].kind] += 1,
                    }
                }
            }
            let area = (cell * cell) as f32;
            let mut present: Vec<(usize, usize)> =
                counts.iter().enumerate().filter(|(_, &n)| n as f32 >= COVER_FRACTION * area).map(|(k, &n)| (k, n)).collect();
            present.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            let mut background = Vec::new();
            let bg_total = bg[0] + bg[1];
            for (id, &n) in bg.iter().enumerate() {
                if n > 0 && n as f32 >= 0.25 * bg_total as f32 {
                    let ci = if id == 0 { a } else { b };
                    background.push(COLOURS[ci].0.to_string());
                }
            }
            patches.push(PatchTruth {
                row: r as u32,
                col: c as u32,
                top_cover: present.first().map_or(0.0, |p| p.1 as f32 / area),
                objects: present.iter().map(|p| catalog.kinds[p.0].noun.clone()).collect(),
                background,
            });
        }
    }
    let caption = caption(&mut rng, catalog, &chosen, &objects, &background);
    Ok(Scene { seed, size, rgb, background, objects, caption, patches, grid: cfg.grid })
}

/// Draws `kind` scaled to `side` at `(x0, y0)` (bilinear, alpha over).
#[allow(clippy::too_many_arguments)]
fn draw(kind: &ObjectKind, rgb: &mut [u8], label: &mut [u16], s: usize, x0: usize, y0: usize, side: usize, inst: u16) {
    let src = kind.side as usize;
    let scale = src as f32 / side as f32;
    let px = |x: usize, y: usize, k: usize| kind.rgba[(y * src + x) * 4 + k] as f32;
    for dy in 0..side {
        let sy = ((dy as f32 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f32);
        let (y0s, fy) = (sy.floor() as usize, sy - sy.floor());
        let y1s = (y0s + 1).min(src - 1);
        for dx in 0..side {
            let sx = ((dx as f32 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f32);
            let (x0s, fx) = (sx.floor() as usize, sx - sx.floor());
            let x1s = (x0s + 1).min(src - 1);
            let sample = |k: usize| {
                let top = px(x0s, y0s, k) * (1.0 - fx) + px(x1s, y0s, k) * fx;
                let bot = px(x0s, y1s, k) * (1.0 - fx) + px(x1s, y1s, k) * fx;
                top * (1.0 - fy) + bot * fy
            };
            // Premultiplied interpolation so transparent pixels do not bleed.
            let alpha = sample(3) / 255.0;
            if alpha <= 0.0 {
                continue;
            }
            let (x, y) = (x0 + dx, y0 + dy);
            let o = (y * s + x) * 3;
            for k in 0..3 {
                let pm = {
                    let top = px(x0s, y0s, k) * px(x0s, y0s, 3) * (1.0 - fx) + px(x1s, y0s, k) * px(x1s, y0s, 3) * fx;
                    let bot = px(x0s, y1s, k) * px(x0s, y1s, 3) * (1.0 - fx) + px(x1s, y1s, k) * px(x1s, y1s, 3) * fx;
                    (top * (1.0 - fy) + bot * fy) / 255.0
                };
                let v = pm + rgb[o + k] as f32 * (1.0 - alpha);
                rgb[o + k] = v.round().clamp(0.0, 255.0) as u8;
            }
            if alpha >= 0.5 {
                label[y * s + x] = inst;
            }
        }
    }
}

/// A caption from one of several templates.
fn caption(
    rng: &mut Rng,
    catalog: &Catalog,
    chosen: &[(usize, usize)],
    objects: &[PlacedObject],
    background: &Background,
) -> String {
    let items: Vec<String> = chosen.iter().map(|&(k, n)| noun_phrase(&catalog.kinds[k], n)).collect();
    let list = join_list(&items);
    let bg = background.phrase();
    let total: usize = chosen.iter().map(|c| c.1).sum();
    let verb = if total == 1 { "is" } else { "are" };
    // A spatial relation between the first instances of two kinds.
    let relation = if chosen.len() >= 2 {
        let a = objects.iter().find(|o| o.kind == chosen[0].0);
        let b = objects.iter().find(|o| o.kind == chosen[1].0);
        match (a, b) {
            (Some(a), Some(b)) => {
                let (ax, ay) = ((a.rect[0] + a.rect[2]) as i64 / 2, (a.rect[1] + a.rect[3]) as i64 / 2);
                let (bx, by) = ((b.rect[0] + b.rect[2]) as i64 / 2, (b.rect[1] + b.rect[3]) as i64 / 2);
                let rel = if (ax - bx).abs() >= (ay - by).abs() {
                    if ax < bx {
                        "to the left of"
                    } else {
                        "to the right of"
                    }
                } else if ay < by {
                    "above"
                } else {
                    "below"
                };
                let na = &catalog.kinds[a.kind].noun;
                let nb = &catalog.kinds[b.kind].noun;
                Some(format!("the {na} is {rel} the {nb}"))
            }
            _ => None,
        }
    } else {
        None
    };
    let t = rng.below(if relation.is_some() { 7 } else { 5 });
    match (t, relation) {
        (0, _) => format!("{} on {bg}.", capitalise(&list)),
        (1, _) => format!("A picture of {list} on {bg}."),
        (2, _) => format!("There {verb} {list} on {bg}."),
        (3, _) => format!("{} against {bg}.", capitalise(&list)),
        (4, _) => format!("An image showing {list} over {bg}."),
        (5, Some(rel)) => format!("{}; {rel}, on {bg}.", capitalise(&list)),
        (_, Some(rel)) => format!("{}: {rel}. The background is {}.", capitalise(&list), bg.trim_end_matches(" background").trim_start_matches("a ").trim_start_matches("an ")),
        _ => format!("{} on {bg}.", capitalise(&list)),
    }
}

/// All words of the scene's object nouns (for checking whether a caption
/// names an object): singular and plural forms.
pub fn object_words(catalog: &Catalog, scene: &Scene) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for o in &scene.objects {
        if let Some(k) = catalog.kinds.get(o.kind) {
            out.insert(k.noun.clone());
            out.insert(k.plural.clone());
        }
    }
    out
}

/// Whether `text` names at least one object of the scene (whole words,
/// case-insensitive, singular or plural).
pub fn names_an_object(catalog: &Catalog, scene: &Scene, text: &str) -> bool {
    let words = object_words(catalog, scene);
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).any(|w| words.contains(w))
}
