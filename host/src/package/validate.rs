//! The rules a parsed `sandserve.toml` must satisfy beyond its TOML shape: names, ranges,
//! graph file counts, signature datatypes, example requests, and confined, distinct paths. Each failure names
//! its field (`graphs[1].files[0]`) and says what to change.

use super::manifest::{Example, GraphEntry, Limits, Manifest, Signature, TensorSignature};
use super::paths::confined_problem;
use super::PackageError;
use crate::inference::Encoding;
use std::collections::HashMap;

/// Longest `description`, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Longest tensor name in a signature, in bytes.
const MAX_TENSOR_NAME_BYTES: usize = 256;
/// Most dimensions a signature tensor may have.
const MAX_RANK: usize = 32;
/// Largest `intra_op_threads`.
const MAX_THREADS: usize = 256;

type Checked = Result<(), PackageError>;

/// Checks every rule; returns the first broken one.
pub(crate) fn check(m: &Manifest) -> Checked {
    check_name(&m.name)?;
    if let Some(d) = &m.description {
        if d.len() > MAX_DESCRIPTION_BYTES {
            return Err(PackageError::manifest(
                "description",
                format!("is longer than {MAX_DESCRIPTION_BYTES} bytes; shorten it"),
            ));
        }
    }
    check_limits(&m.limits)?;
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, graph) in m.graphs.iter().enumerate() {
        check_graph(i, graph)?;
        if let Some(first) = names.insert(&graph.name, i) {
            return Err(PackageError::manifest(
                format!("graphs[{i}].name"),
                format!(
                    "`{}` is already the name of graphs[{first}]; graph names must be unique",
                    graph.name
                ),
            ));
        }
    }
    if let Some(g) = &m.guest_load {
        range("guest_load.max_mib", g.max_mib, 1, 1024, "MiB")?;
    }
    if let Some(s) = &m.signature {
        check_signature(s)?;
    }
    check_examples(&m.examples)?;
    check_paths(m)
}

/// Most `[[examples]]`, and the largest request of one.
const MAX_EXAMPLES: usize = 16;
const MAX_EXAMPLE_BYTES: usize = 64 << 10;

fn check_examples(examples: &[Example]) -> Checked {
    if examples.len() > MAX_EXAMPLES {
        return Err(PackageError::manifest(
            "examples",
            format!("has {} entries; at most {MAX_EXAMPLES}", examples.len()),
        ));
    }
    for (i, example) in examples.iter().enumerate() {
        let name_ok = (1..=64).contains(&example.name.len())
            && example
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(PackageError::manifest(
                format!("examples[{i}].name"),
                "must be 1-64 of a-z A-Z 0-9 _ . -",
            ));
        }
        if examples[..i].iter().any(|e| e.name == example.name) {
            return Err(PackageError::manifest(
                format!("examples[{i}].name"),
                format!(
                    "`{}` is named twice; example names must be unique",
                    example.name
                ),
            ));
        }
        let request =
            |problem: String| PackageError::manifest(format!("examples[{i}].request"), problem);
        if example.request.len() > MAX_EXAMPLE_BYTES {
            return Err(request(format!("is longer than {MAX_EXAMPLE_BYTES} bytes")));
        }
        match serde_json::from_str::<serde_json::Value>(&example.request) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(request("must be a JSON object".to_string())),
            Err(e) => return Err(request(format!("is not JSON: {e}"))),
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Checked {
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if (1..=64).contains(&name.len()) && starts_ok && chars_ok {
        return Ok(());
    }
    Err(PackageError::manifest(
        "name",
        format!(
            "`{name}` is not a valid model name; use 1 to 64 characters of a-z, 0-9, `_` \
             and `-`, starting with a letter or digit"
        ),
    ))
}

fn check_limits(l: &Limits) -> Checked {
    range(
        "limits.timeout_ms",
        l.timeout_ms,
        1,
        300_000,
        "milliseconds",
    )?;
    range("limits.memory_mib", l.memory_mib, 1, 4096, "MiB")?;
    range("limits.max_output_mib", l.max_output_mib, 1, 1024, "MiB")?;
    range(
        "limits.max_concurrency",
        l.max_concurrency as u64,
        1,
        1024,
        "requests",
    )?;
    if l.fuel == Some(0) {
        return Err(PackageError::manifest(
            "limits.fuel",
            "must be at least 1; leave it out for unmetered handlers",
        ));
    }
    Ok(())
}

fn range(field: &str, value: u64, min: u64, max: u64, unit: &str) -> Checked {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(PackageError::manifest(
        field,
        format!("must be between {min} and {max} {unit}, got {value}"),
    ))
}

fn check_graph(i: usize, g: &GraphEntry) -> Checked {
    let name_ok = (1..=64).contains(&g.name.len())
        && g.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(PackageError::manifest(
            format!("graphs[{i}].name"),
            format!(
                "`{}` is not a valid graph name; use 1 to 64 characters of a-z, A-Z, 0-9, \
                 `_`, `.` and `-`",
                g.name
            ),
        ));
    }
    let files = |problem: String| PackageError::manifest(format!("graphs[{i}].files"), problem);
    let ends = |index: usize, ext: &str| {
        g.files
            .get(index)
            .is_some_and(|f| f.to_ascii_lowercase().ends_with(ext))
    };
    match (g.encoding, g.files.len()) {
        (Encoding::Onnx, 1) => {}
        (Encoding::Onnx, n) => {
            return Err(files(format!(
                "an onnx graph takes exactly one .onnx file, got {n}"
            )))
        }
        (Encoding::Openvino, 1) if ends(0, ".onnx") => {}
        (Encoding::Openvino, 2) if ends(0, ".xml") && ends(1, ".bin") => {}
        (Encoding::Openvino, n) => {
            return Err(files(format!(
                "an openvino graph takes one .onnx file, or an IR .xml file then its .bin \
                 file; got {n} file(s): {:?}",
                g.files
            )))
        }
    }
    if let Some(batching) = &g.batching {
        batching.check(i)?;
    }
    if let Some(threads) = g.intra_op_threads {
        if threads > MAX_THREADS {
            return Err(PackageError::manifest(
                format!("graphs[{i}].intra_op_threads"),
                format!(
                    "must be at most {MAX_THREADS} (0 means the engine default), got {threads}"
                ),
            ));
        }
    }
    Ok(())
}

fn check_signature(s: &Signature) -> Checked {
    if s.inputs.is_empty() {
        return Err(PackageError::manifest(
            "signature.inputs",
            "list at least one input, or leave out [signature]",
        ));
    }
    check_tensors("signature.inputs", &s.inputs)?;
    check_tensors("signature.outputs", &s.outputs)
}

fn check_tensors(list: &str, tensors: &[TensorSignature]) -> Checked {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, t) in tensors.iter().enumerate() {
        let at = |field: &str| format!("{list}[{i}].{field}");
        if t.name.is_empty()
            || t.name.len() > MAX_TENSOR_NAME_BYTES
            || t.name.chars().any(char::is_control)
        {
            return Err(PackageError::manifest(
                at("name"),
                format!("must be 1 to {MAX_TENSOR_NAME_BYTES} bytes without control characters"),
            ));
        }
        if let Some(first) = seen.insert(&t.name, i) {
            return Err(PackageError::manifest(
                at("name"),
                format!("`{}` is already the name of {list}[{first}]", t.name),
            ));
        }
        if t.element_type().is_none() {
            return Err(PackageError::manifest(
                at("datatype"),
                format!(
                    "`{}` is not a KServe V2 datatype; use one of BOOL, UINT8, UINT16, \
                     UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES",
                    t.datatype
                ),
            ));
        }
        if t.shape.len() > MAX_RANK {
            return Err(PackageError::manifest(
                at("shape"),
                format!(
                    "has {} dimensions; at most {MAX_RANK} are allowed",
                    t.shape.len()
                ),
            ));
        }
        if let Some(d) = t.shape.iter().find(|d| **d < -1) {
            return Err(PackageError::manifest(
                at("shape"),
                format!("dimension {d} is invalid; use a size >= 0, or -1 for a free dimension"),
            ));
        }
    }
    Ok(())
}

/// Every named path is confined and named once.
fn check_paths(m: &Manifest) -> Checked {
    let fields = std::iter::once(("handler".to_owned(), m.handler.as_str())).chain(
        m.graphs.iter().enumerate().flat_map(|(i, g)| {
            g.files
                .iter()
                .enumerate()
                .map(move |(j, f)| (format!("graphs[{i}].files[{j}]"), f.as_str()))
        }),
    );
    let mut seen: HashMap<&str, String> = HashMap::new();
    for (field, path) in fields {
        if let Some(problem) = confined_problem(path) {
            return Err(PackageError::manifest(
                field,
                format!("{problem} (`{path}`)"),
            ));
        }
        if let Some(first) = seen.get(path) {
            return Err(PackageError::manifest(
                field,
                format!("`{path}` is already named by `{first}`; name each file once"),
            ));
        }
        seen.insert(path, field);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"m\"\nhandler = \"m.wasm\"\n";

    /// Parses `BASE` plus `extra` and returns the (field, problem) of the error.
    fn refused(extra: &str) -> (String, String) {
        match Manifest::parse(&format!("{BASE}{extra}")) {
            Err(PackageError::BadManifest { field, problem }) => (field, problem),
            other => panic!("expected BadManifest for {extra:?}, got {other:?}"),
        }
    }

    fn graph(name: &str, encoding: &str, files: &str) -> String {
        format!("[[graphs]]\nname = \"{name}\"\nencoding = \"{encoding}\"\nfiles = {files}\n")
    }

    #[test]
    fn bad_model_names() {
        for bad in ["Digits", "-digits", "", "a b", "dïgits", &"a".repeat(65)] {
            let text = format!("name = \"{bad}\"\nhandler = \"m.wasm\"\n");
            let err = Manifest::parse(&text).unwrap_err();
            let PackageError::BadManifest { field, problem } = err else {
                panic!("{err:?}")
            };
            assert_eq!(field, "name");
            assert!(problem.contains("not a valid model name"), "{problem}");
        }
        for good in ["digits", "0day", "a_b-c", &"a".repeat(64)] {
            let text = format!("name = \"{good}\"\nhandler = \"m.wasm\"\n");
            assert!(Manifest::parse(&text).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_examples() {
        let example = |name: &str, request: &str| {
            format!("[[examples]]\nname = \"{name}\"\nrequest = '{request}'\n")
        };
        let ok = example("one", r#"{"instances": [[1]]}"#);
        let text = format!("name = \"m\"\nhandler = \"m.wasm\"\n{ok}");
        assert_eq!(Manifest::parse(&text).unwrap().examples[0].name, "one");
        for (extra, field, says) in [
            (example("a b", "{}"), "examples[0].name", "a-z"),
            (
                ok.clone() + &example("one", "{}"),
                "examples[1].name",
                "named twice",
            ),
            (example("x", "[1]"), "examples[0].request", "JSON object"),
            (example("x", "{nope"), "examples[0].request", "not JSON"),
        ] {
            let (got, problem) = refused(&extra);
            assert_eq!(got, field);
            assert!(problem.contains(says), "{problem}");
        }
    }

    #[test]
    fn duplicate_graph_names() {
        let text = graph("g", "onnx", "[\"a.onnx\"]") + &graph("g", "onnx", "[\"b.onnx\"]");
        let (field, problem) = refused(&text);
        assert_eq!(field, "graphs[1].name");
        assert!(
            problem.contains("already the name of graphs[0]"),
            "{problem}"
        );
    }

    #[test]
    fn bad_graph_name() {
        let (field, problem) = refused(&graph("a/b", "onnx", "[\"a.onnx\"]"));
        assert_eq!(field, "graphs[0].name");
        assert!(problem.contains("not a valid graph name"), "{problem}");
    }

    #[test]
    fn wrong_file_counts() {
        let (field, problem) = refused(&graph("g", "onnx", "[\"a.onnx\", \"b.onnx\"]"));
        assert_eq!(field, "graphs[0].files");
        assert!(
            problem.contains("exactly one .onnx file, got 2"),
            "{problem}"
        );

        let (_, problem) = refused(&graph("g", "onnx", "[]"));
        assert!(problem.contains("got 0"), "{problem}");

        // OpenVINO IR must be .xml then .bin.
        let (field, problem) = refused(&graph("g", "openvino", "[\"m.bin\", \"m.xml\"]"));
        assert_eq!(field, "graphs[0].files");
        assert!(problem.contains(".xml file then its .bin"), "{problem}");

        let ok = graph("g", "openvino", "[\"m.xml\", \"m.bin\"]");
        assert!(Manifest::parse(&format!("{BASE}{ok}")).is_ok());
        let ok = graph("g", "openvino", "[\"m.onnx\"]");
        assert!(Manifest::parse(&format!("{BASE}{ok}")).is_ok());
    }

    #[test]
    fn bad_datatype() {
        let (field, problem) = refused(
            "[signature]\ninputs = [ { name = \"x\", datatype = \"FP32\", shape = [-1] } ]\n\
             outputs = [ { name = \"y\", datatype = \"float32\", shape = [-1] } ]\n",
        );
        assert_eq!(field, "signature.outputs[0].datatype");
        assert!(
            problem.contains("`float32` is not a KServe V2 datatype"),
            "{problem}"
        );
    }

    #[test]
    fn bad_signature_shapes_and_names() {
        let (field, problem) = refused(
            "[signature]\ninputs = [ { name = \"x\", datatype = \"FP32\", shape = [-2] } ]\n",
        );
        assert_eq!(field, "signature.inputs[0].shape");
        assert!(problem.contains("dimension -2"), "{problem}");

        let (field, _) = refused(
            "[signature]\ninputs = [ { name = \"x\", datatype = \"FP32\", shape = [1] }, \
             { name = \"x\", datatype = \"FP32\", shape = [1] } ]\n",
        );
        assert_eq!(field, "signature.inputs[1].name");

        let (field, _) = refused("[signature]\ninputs = []\n");
        assert_eq!(field, "signature.inputs");
    }

    #[test]
    fn limits_out_of_range() {
        let (field, problem) = refused("[limits]\ntimeout_ms = 0\n");
        assert_eq!(field, "limits.timeout_ms");
        assert!(problem.contains("between 1 and 300000"), "{problem}");
        let (field, _) = refused("[limits]\nmemory_mib = 4097\n");
        assert_eq!(field, "limits.memory_mib");
        let (field, _) = refused("[limits]\nmax_concurrency = 0\n");
        assert_eq!(field, "limits.max_concurrency");
        let (field, _) = refused("[limits]\nfuel = 0\n");
        assert_eq!(field, "limits.fuel");
        let (field, _) = refused("[guest_load]\nmax_mib = 2048\n");
        assert_eq!(field, "guest_load.max_mib");
    }

    #[test]
    fn paths_must_be_confined() {
        let (field, problem) =
            refused(&(graph("a", "onnx", "[\"a.onnx\"]") + &graph("b", "onnx", "[\"../b.onnx\"]")));
        assert_eq!(field, "graphs[1].files[0]");
        assert!(problem.starts_with("path escapes the package"), "{problem}");

        let err = Manifest::parse("name = \"m\"\nhandler = \"/m.wasm\"\n").unwrap_err();
        assert_eq!(
            err,
            PackageError::manifest(
                "handler",
                "path is absolute; name it relative to the package root (`/m.wasm`)"
            )
        );

        let (field, _) = refused(&graph("a", "onnx", "[\"sandserve.toml\"]"));
        assert_eq!(field, "graphs[0].files[0]");
    }

    #[test]
    fn paths_must_be_named_once() {
        let (field, problem) = refused(&graph("a", "onnx", "[\"m.wasm\"]"));
        assert_eq!(field, "graphs[0].files[0]");
        assert!(problem.contains("already named by `handler`"), "{problem}");
    }
}
