//! The browser client's page lists every module it imports as a `modulepreload`: one that is
//! missing is requested only after its importer arrived and ran through the parser, a second
//! round trip before the page can join (it cost the first-frame benchmark ~50–100 ms when
//! recording.js and ice_restart.js were added without one).

use std::collections::BTreeSet;
use std::path::Path;

/// The `./x.js` modules `source` imports statically.
fn imports(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for statement in source.split("import ").skip(1) {
        // `import ... from './x.js'` or `import './x.js'`, possibly over several lines.
        let Some(end) = statement.find(';') else {
            continue;
        };
        let statement = &statement[..end];
        let quoted = statement.rsplit(['\'', '"']).nth(1);
        if let Some(path) = quoted.and_then(|q| q.strip_prefix("./")) {
            if path.ends_with(".js") && !statement.contains('(') {
                out.push(path.to_string());
            }
        }
    }
    out
}

#[test]
fn every_module_the_page_imports_is_preloaded() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let read = |name: &str| {
        std::fs::read_to_string(web.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let html = read("index.html");
    let preloaded: BTreeSet<String> = html
        .split("<link rel=\"modulepreload\" href=\"/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect();

    let mut graph = BTreeSet::new();
    let mut todo = vec!["app.js".to_string()];
    while let Some(module) = todo.pop() {
        if graph.insert(module.clone()) {
            todo.extend(imports(&read(&module)));
        }
    }
    assert!(
        graph.len() > 5 && graph.contains("client.js"),
        "the import scan found the page's modules: {graph:?}"
    );
    let missing: Vec<_> = graph.difference(&preloaded).collect();
    assert!(
        missing.is_empty(),
        "index.html must modulepreload {missing:?} (the page imports them)"
    );
    let unused: Vec<_> = preloaded.difference(&graph).collect();
    assert!(
        unused.is_empty(),
        "index.html preloads {unused:?}, which the page does not import"
    );
}
