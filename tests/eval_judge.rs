//! WordNet lemmatisation (morphy), synonyms / direct hypernyms, and the
//! automatic judge, on the real Debian `wordnet-base` database.

use latentlens::eval::judge::Judge;
use latentlens::eval::scenes::PatchTruth;
use latentlens::eval::wordnet::WordNet;

fn wordnet() -> Option<WordNet> {
    let dir = std::path::Path::new("/usr/share/wordnet");
    if !dir.join("index.noun").is_file() {
        let require = std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() == Ok("1");
        assert!(!require, "WordNet missing at /usr/share/wordnet and LATENTLENS_REQUIRE_ASSETS=1");
        eprintln!("\n!!!!!!!! SKIPPING: WordNet not installed (apt-get install wordnet-base) !!!!!!!!\n");
        return None;
    }
    Some(WordNet::open(dir).unwrap())
}

#[test]
fn morphy_lemmas() {
    let Some(wn) = wordnet() else { return };
    for (w, base) in [("cats", "cat"), ("mice", "mouse"), ("boxes", "box"), ("cherries", "cherry"), ("knives", "knife"), ("running", "run"), ("geese", "goose"), ("Dogs", "dog")] {
        assert!(wn.lemmas(w).contains(base), "{w} -> {:?}", wn.lemmas(w));
    }
    assert!(wn.lemmas("zzzqx").contains("zzzqx"));
}

#[test]
fn synonyms_and_hypernyms() {
    let Some(wn) = wordnet() else { return };
    let dog = wn.noun_related("dog");
    assert!(dog.contains("canine"), "{dog:?}");
    let car = wn.noun_related("car");
    assert!(car.contains("automobile") && car.contains("motorcar"), "{car:?}");
    assert!(wn.noun_related("apple").contains("fruit") || wn.noun_related("apple").contains("pome"));
}

#[test]
fn judge_matches_objects_synonyms_and_background() {
    let Some(wn) = wordnet() else { return };
    let j = Judge::new(&wn);
    let p = PatchTruth { row: 0, col: 0, objects: vec!["car".into()], top_cover: 0.5, background: vec!["gray".into()] };
    let acc = j.accepted(&p);
    assert!(j.matches("cars", &acc).is_some());
    assert!(j.matches(" Automobile", &acc).is_some());
    assert!(j.matches("grey", &acc).is_some());
    assert!(j.matches("banana", &acc).is_none());
    assert!(j.matches("the", &acc).is_none());
    assert!(j.matches("...", &acc).is_none());
}
