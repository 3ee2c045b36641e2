//! Graphs load only from their own declared files: the check that a model file refers to
//! nothing outside itself, run on every graph before any engine sees its bytes.
//!
//! Why: an ONNX tensor may keep its data in an "external" file named by a relative path
//! (`data_location = EXTERNAL`, `external_data { key: "location" ... }`). The engines
//! resolve that path themselves: ONNX Runtime against the model file's folder (for a stored
//! graph, the shared blob folder, so another tenant's blob by its digest), OpenVINO against
//! the server's working directory (the metadata database, any file the server can read).
//! Neither engine can be told not to, so the host walks the protobuf itself and refuses any
//! tensor that is not stored inline, anywhere it can occur: initializers, sparse
//! initializers, constant attributes, subgraphs (`If`/`Loop`/`Scan` bodies), model-local
//! functions and training graphs.
//!
//! The walk reads the file once, in constant memory (large `raw_data` fields are skipped
//! with a seek, never buffered), and bounds nesting so a hostile file cannot exhaust the
//! stack. For OpenVINO IR (`.xml` + `.bin`), the `.xml` must be IR text: the weights come
//! from the `.bin` by offset and IR names no other file; anything else handed to OpenVINO
//! as "xml" (an ONNX or TensorFlow file in disguise) is refused.

use std::io::{Read, Seek, SeekFrom};
use thiserror::Error;

/// Why a model file is not self-contained (or not the format it claims to be).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotSelfContained {
    /// A tensor keeps its data in another file.
    #[error(
        "tensor `{tensor}` keeps its data in an external file; graphs must be self-contained: \
         save the model with its weights inside (in Python: \
         onnx.save_model(model, path, save_as_external_data=False))"
    )]
    ExternalData {
        /// The tensor's name in the model (as the model spells it, cut to 128 bytes).
        tensor: String,
    },
    /// The file is not a well-formed ONNX model.
    #[error("not a valid ONNX model ({0}); export it again with onnx.save_model")]
    MalformedOnnx(&'static str),
    /// An ONNX Runtime format (`.ort`) file: sandserve serves ONNX protobuf files only.
    #[error("an ONNX Runtime format (.ort) file; package the .onnx model instead")]
    OrtFormat,
    /// The file given as OpenVINO IR `.xml` is not IR text.
    #[error("the first file of an OpenVINO IR graph must be the IR .xml text")]
    NotIrXml,
    /// The file could not be read.
    #[error("the model file could not be read")]
    Unreadable,
}

/// Deepest nesting of messages accepted (graphs inside attributes inside nodes...). Real
/// models nest a few levels; thousands would only serve to exhaust the host's stack.
const MAX_DEPTH: u32 = 64;

/// Longest tensor name kept for the error message.
const MAX_NAME: usize = 128;

/// Fields skipped by reading rather than seeking (a seek drops a buffered reader's buffer).
const READ_TO_SKIP: u64 = 8 << 10;

/// Checks an ONNX model: well-formed protobuf with a graph, every tensor inline.
pub fn check_onnx(source: impl Read + Seek) -> Result<(), NotSelfContained> {
    let mut walker = Walker {
        source: std::io::BufReader::new(source),
        pos: 0,
    };
    walker
        .source
        .rewind()
        .map_err(|_| NotSelfContained::Unreadable)?;
    let len = walker
        .source
        .seek(SeekFrom::End(0))
        .map_err(|_| NotSelfContained::Unreadable)?;
    walker
        .source
        .rewind()
        .map_err(|_| NotSelfContained::Unreadable)?;
    let mut head = [0u8; 8];
    if len >= 8 {
        walker.read_exact(&mut head)?;
        // ONNX Runtime's flatbuffer format carries its identifier at offset 4.
        if &head[4..8] == b"ORTM" {
            return Err(NotSelfContained::OrtFormat);
        }
        walker
            .source
            .rewind()
            .map_err(|_| NotSelfContained::Unreadable)?;
        walker.pos = 0;
    }
    let found = walker.message(Kind::Model, len, 0)?;
    if !found.graph {
        return Err(NotSelfContained::MalformedOnnx("it has no graph"));
    }
    Ok(())
}

/// Checks the first file of an OpenVINO IR pair: XML text (after an optional BOM and
/// whitespace, it starts with `<?xml`, `<net` or a comment).
pub fn check_ir_xml(mut source: impl Read) -> Result<(), NotSelfContained> {
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match source.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(NotSelfContained::Unreadable),
        }
    }
    let text = head[..filled]
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&head[..filled]);
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let text = &text[start..];
    // IR starts with the XML declaration or the `<net` element (comments aside).
    if text.starts_with(b"<?xml") || text.starts_with(b"<net") || text.starts_with(b"<!--") {
        Ok(())
    } else {
        Err(NotSelfContained::NotIrXml)
    }
}

/// The ONNX messages that can hold a tensor, directly or further down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    SparseTensor,
    Function,
    TrainingInfo,
}

impl Kind {
    /// The message kind of field `field` of this message, when it can hold a tensor.
    /// Field numbers are onnx.proto's.
    fn child(self, field: u64) -> Option<Kind> {
        use Kind::*;
        match (self, field) {
            (Model, 7) => Some(Graph),
            (Model, 20) => Some(TrainingInfo),
            (Model, 25) => Some(Function),
            (Graph, 1) => Some(Node),
            (Graph, 5) => Some(Tensor),
            (Graph, 15) => Some(SparseTensor),
            (Node, 5) => Some(Attribute),
            (Attribute, 5 | 10) => Some(Tensor),
            (Attribute, 6 | 11) => Some(Graph),
            (Attribute, 22 | 23) => Some(SparseTensor),
            (SparseTensor, 1 | 2) => Some(Tensor),
            (Function, 7) => Some(Node),
            (Function, 11) => Some(Attribute),
            (TrainingInfo, 1 | 2) => Some(Graph),
            _ => None,
        }
    }
}

/// What a walked message held that its parent wants to know.
#[derive(Default)]
struct Found {
    graph: bool,
}

/// TensorProto's `name`, `external_data` and `data_location` fields.
const TENSOR_NAME: u64 = 8;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;

struct Walker<R: Read + Seek> {
    source: std::io::BufReader<R>,
    /// Offset of the next byte to read.
    pos: u64,
}

impl<R: Read + Seek> Walker<R> {
    /// Walks the fields of one message that ends at offset `end`.
    fn message(&mut self, kind: Kind, end: u64, depth: u32) -> Result<Found, NotSelfContained> {
        if depth > MAX_DEPTH {
            return Err(NotSelfContained::MalformedOnnx("messages nest too deeply"));
        }
        let mut found = Found::default();
        let mut tensor_name = String::new();
        let mut external = false;
        while self.pos < end {
            let key = self.varint(end)?;
            let (field, wire) = (key >> 3, key & 7);
            if field == 0 {
                // Not a protobuf at all (a file of zeros, say): stop at once.
                return Err(NotSelfContained::MalformedOnnx("field number 0"));
            }
            match wire {
                0 => {
                    let value = self.varint(end)?;
                    // DataLocation: DEFAULT = 0, EXTERNAL = 1 (any other is not inline either).
                    if kind == Kind::Tensor && field == TENSOR_DATA_LOCATION && value != 0 {
                        external = true;
                    }
                }
                1 => self.skip(8, end)?,
                5 => self.skip(4, end)?,
                2 => {
                    let len = self.varint(end)?;
                    let field_end = self.pos.checked_add(len).filter(|e| *e <= end).ok_or(
                        NotSelfContained::MalformedOnnx("a field runs past its message"),
                    )?;
                    if kind == Kind::Tensor && field == TENSOR_EXTERNAL_DATA {
                        external = true;
                        self.skip(len, end)?;
                    } else if kind == Kind::Tensor && field == TENSOR_NAME {
                        tensor_name = self.text(len, end)?;
                    } else if let Some(child) = kind.child(field) {
                        self.message(child, field_end, depth + 1)?;
                        if kind == Kind::Model && child == Kind::Graph {
                            found.graph = true;
                        }
                    } else {
                        self.skip(len, end)?;
                    }
                }
                _ => return Err(NotSelfContained::MalformedOnnx("unknown wire type")),
            }
        }
        if self.pos != end {
            return Err(NotSelfContained::MalformedOnnx(
                "a field runs past its message",
            ));
        }
        if external {
            return Err(NotSelfContained::ExternalData {
                tensor: tensor_name,
            });
        }
        Ok(found)
    }

    fn varint(&mut self, end: u64) -> Result<u64, NotSelfContained> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            if self.pos >= end {
                return Err(NotSelfContained::MalformedOnnx("a number is cut off"));
            }
            let mut byte = [0u8; 1];
            self.read_exact(&mut byte)?;
            value |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(NotSelfContained::MalformedOnnx("a number is too long"))
    }

    fn skip(&mut self, len: u64, end: u64) -> Result<(), NotSelfContained> {
        if self.pos.checked_add(len).is_none_or(|e| e > end) {
            return Err(NotSelfContained::MalformedOnnx(
                "a field runs past its message",
            ));
        }
        if len <= READ_TO_SKIP {
            let copied = std::io::copy(&mut (&mut self.source).take(len), &mut std::io::sink())
                .map_err(|_| NotSelfContained::Unreadable)?;
            if copied != len {
                return Err(NotSelfContained::MalformedOnnx("the file is cut off"));
            }
        } else {
            let offset = i64::try_from(len).map_err(|_| NotSelfContained::Unreadable)?;
            self.source
                .seek_relative(offset)
                .map_err(|_| NotSelfContained::Unreadable)?;
        }
        self.pos += len;
        Ok(())
    }

    /// Reads a string field, keeping at most [`MAX_NAME`] bytes of it.
    fn text(&mut self, len: u64, end: u64) -> Result<String, NotSelfContained> {
        let kept = len.min(MAX_NAME as u64);
        let mut bytes = vec![0u8; kept as usize];
        self.read_exact(&mut bytes)?;
        self.skip(len - kept, end)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NotSelfContained> {
        self.source.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                NotSelfContained::MalformedOnnx("the file is cut off")
            } else {
                NotSelfContained::Unreadable
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
