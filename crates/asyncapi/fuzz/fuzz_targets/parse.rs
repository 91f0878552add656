//! Any text given as an AsyncAPI document is parsed or refused with an error, and whatever
//! parses generates a pipeline or refuses to: never a panic, never unbounded work.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use zilla_asyncapi::{
    AsyncapiOptions, Composite, CompositeKind, ExitTarget, Overrides, generate, parse,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse("fuzz.yaml", text) else {
        return;
    };
    let mut options = AsyncapiOptions::default();
    options.specs.insert("api".into(), Default::default());
    let specs = [("api".to_owned(), spec)].into_iter().collect();
    let exits = BTreeMap::from([(
        "next".to_owned(),
        ExitTarget::Plain {
            reference: "next:next".to_owned(),
        },
    )]);
    for kind in [CompositeKind::Server, CompositeKind::Client] {
        let composite = Composite {
            kind,
            options: &options,
            routes: &[],
            specs: &specs,
            exit: Some("next"),
            exits: &exits,
            overrides: &Overrides::default(),
        };
        if let Ok(namespace) = generate("fuzzed", &composite) {
            let _ = namespace.to_yaml();
        }
    }
});
