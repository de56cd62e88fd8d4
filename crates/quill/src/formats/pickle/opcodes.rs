//! Pickle opcodes and the decoding of one instruction (opcode + argument) from a byte stream.
//! Decoding never allocates more than the input holds: every length is checked against the
//! bytes that remain before it is used.

pub(super) const MARK: u8 = b'(';
pub(super) const STOP: u8 = b'.';
pub(super) const POP: u8 = b'0';
pub(super) const POP_MARK: u8 = b'1';
pub(super) const DUP: u8 = b'2';
pub(super) const FLOAT: u8 = b'F';
pub(super) const INT: u8 = b'I';
pub(super) const BININT: u8 = b'J';
pub(super) const BININT1: u8 = b'K';
pub(super) const LONG: u8 = b'L';
pub(super) const BININT2: u8 = b'M';
pub(super) const NONE: u8 = b'N';
pub(super) const PERSID: u8 = b'P';
pub(super) const BINPERSID: u8 = b'Q';
pub(super) const REDUCE: u8 = b'R';
pub(super) const STRING: u8 = b'S';
pub(super) const BINSTRING: u8 = b'T';
pub(super) const SHORT_BINSTRING: u8 = b'U';
pub(super) const UNICODE: u8 = b'V';
pub(super) const BINUNICODE: u8 = b'X';
pub(super) const APPEND: u8 = b'a';
pub(super) const BUILD: u8 = b'b';
pub(super) const GLOBAL: u8 = b'c';
pub(super) const DICT: u8 = b'd';
pub(super) const EMPTY_DICT: u8 = b'}';
pub(super) const APPENDS: u8 = b'e';
pub(super) const GET: u8 = b'g';
pub(super) const BINGET: u8 = b'h';
pub(super) const INST: u8 = b'i';
pub(super) const LONG_BINGET: u8 = b'j';
pub(super) const LIST: u8 = b'l';
pub(super) const EMPTY_LIST: u8 = b']';
pub(super) const OBJ: u8 = b'o';
pub(super) const PUT: u8 = b'p';
pub(super) const BINPUT: u8 = b'q';
pub(super) const LONG_BINPUT: u8 = b'r';
pub(super) const SETITEM: u8 = b's';
pub(super) const TUPLE: u8 = b't';
pub(super) const EMPTY_TUPLE: u8 = b')';
pub(super) const SETITEMS: u8 = b'u';
pub(super) const BINFLOAT: u8 = b'G';
pub(super) const PROTO: u8 = 0x80;
pub(super) const NEWOBJ: u8 = 0x81;
pub(super) const EXT1: u8 = 0x82;
pub(super) const EXT2: u8 = 0x83;
pub(super) const EXT4: u8 = 0x84;
pub(super) const TUPLE1: u8 = 0x85;
pub(super) const TUPLE2: u8 = 0x86;
pub(super) const TUPLE3: u8 = 0x87;
pub(super) const NEWTRUE: u8 = 0x88;
pub(super) const NEWFALSE: u8 = 0x89;
pub(super) const LONG1: u8 = 0x8a;
pub(super) const LONG4: u8 = 0x8b;
pub(super) const BINBYTES: u8 = b'B';
pub(super) const SHORT_BINBYTES: u8 = b'C';
pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
pub(super) const BINUNICODE8: u8 = 0x8d;
pub(super) const BINBYTES8: u8 = 0x8e;
pub(super) const EMPTY_SET: u8 = 0x8f;
pub(super) const ADDITEMS: u8 = 0x90;
pub(super) const FROZENSET: u8 = 0x91;
pub(super) const NEWOBJ_EX: u8 = 0x92;
pub(super) const STACK_GLOBAL: u8 = 0x93;
pub(super) const MEMOIZE: u8 = 0x94;
pub(super) const FRAME: u8 = 0x95;
pub(super) const BYTEARRAY8: u8 = 0x96;
pub(super) const NEXT_BUFFER: u8 = 0x97;
pub(super) const READONLY_BUFFER: u8 = 0x98;

/// The name `pickletools` gives an opcode, for error messages.
pub(super) fn op_name(op: u8) -> &'static str {
    match op {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => "unknown opcode",
    }
}

/// The argument an opcode carries in the byte stream.
pub(super) enum Arg<'a> {
    None,
    Int(i64),
    Bool(bool),
    Float(f64),
    /// A memo key (PUT/GET family) or protocol number.
    Id(u64),
    /// UTF-8 text (not yet validated).
    Utf8(&'a [u8]),
    /// Python 2 `str`, decoded as Latin-1.
    Latin1(&'a [u8]),
    Bytes(&'a [u8]),
    /// `module` and `name` of a GLOBAL.
    Global(&'a [u8], &'a [u8]),
}

/// One decoded instruction.
pub(super) struct Instr<'a> {
    /// Byte offset of the opcode.
    pub pos: usize,
    pub op: u8,
    pub arg: Arg<'a>,
}

/// Why an instruction could not be decoded.
pub(super) struct DecodeError {
    pub pos: usize,
    pub op: Option<u8>,
    pub detail: String,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    start: usize,
    op: u8,
}

impl<'a> Cursor<'a> {
    fn fail(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            pos: self.start,
            op: Some(self.op),
            detail: detail.into(),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let left = self.data.len() - self.pos;
        if n > left as u64 {
            return Err(self.fail(format!(
                "truncated: argument needs {n} bytes but only {left} remain"
            )));
        }
        // n <= left, so it fits in usize.
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    /// A newline-terminated text argument (protocol 0), without the newline.
    fn line(&mut self) -> Result<&'a [u8], DecodeError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(self.fail("truncated: text argument has no terminating newline")),
        }
    }

    fn line_str(&mut self) -> Result<&'a str, DecodeError> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.fail("text argument is not ASCII"))
    }

    fn sized(&mut self, len: u64) -> Result<&'a [u8], DecodeError> {
        self.take(len)
    }
}

/// Decodes a little-endian two's-complement integer (LONG1/LONG4) into an i64.
pub(super) fn long_le(b: &[u8]) -> Option<i64> {
    let Some(&last) = b.last() else {
        return Some(0);
    };
    let neg = last & 0x80 != 0;
    let ext = if neg { 0xff } else { 0 };
    let mut n = b.len();
    while n > 8 && b[n - 1] == ext {
        n -= 1;
    }
    if n > 8 {
        return None;
    }
    let mut buf = [ext; 8];
    buf[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(buf);
    if (v < 0) != neg {
        return None;
    }
    Some(v)
}

/// Decodes the instruction at `*pos` and advances `*pos` past it.
pub(super) fn decode<'a>(data: &'a [u8], pos: &mut usize) -> Result<Instr<'a>, DecodeError> {
    let start = *pos;
    let Some(&op) = data.get(start) else {
        return Err(DecodeError {
            pos: start,
            op: None,
            detail: "truncated: the pickle ends before its STOP opcode".into(),
        });
    };
    let mut c = Cursor {
        data,
        pos: start + 1,
        start,
        op,
    };
    let arg = match op {
        PROTO => Arg::Id(c.u8()? as u64),
        FRAME => {
            let n = c.u64()?;
            let left = (data.len() - c.pos) as u64;
            if n > left {
                return Err(c.fail(format!(
                    "frame of {n} bytes but only {left} remain (truncated)"
                )));
            }
            Arg::None
        }
        BININT => Arg::Int(i32::from_le_bytes(c.fixed()?) as i64),
        BININT1 => Arg::Int(c.u8()? as i64),
        BININT2 => Arg::Int(u16::from_le_bytes(c.fixed()?) as i64),
        LONG1 | LONG4 => {
            let n = if op == LONG1 {
                c.u8()? as i64
            } else {
                i32::from_le_bytes(c.fixed()?) as i64
            };
            if n < 0 {
                return Err(c.fail(format!("negative length {n}")));
            }
            let b = c.sized(n as u64)?;
            Arg::Int(long_le(b).ok_or_else(|| c.fail("integer does not fit in 64 bits"))?)
        }
        INT => {
            let s = c.line_str()?;
            match s {
                "01" => Arg::Bool(true),
                "00" => Arg::Bool(false),
                _ => Arg::Int(
                    s.trim()
                        .parse()
                        .map_err(|_| c.fail(format!("`{s}` is not a 64-bit integer")))?,
                ),
            }
        }
        LONG => {
            let s = c.line_str()?;
            let t = s.trim().trim_end_matches('L');
            Arg::Int(
                t.parse()
                    .map_err(|_| c.fail(format!("`{s}` is not a 64-bit integer")))?,
            )
        }
        FLOAT => {
            let s = c.line_str()?;
            Arg::Float(
                s.trim()
                    .parse()
                    .map_err(|_| c.fail(format!("`{s}` is not a float")))?,
            )
        }
        BINFLOAT => Arg::Float(f64::from_be_bytes(c.fixed()?)),
        SHORT_BINUNICODE => {
            let n = c.u8()? as u64;
            Arg::Utf8(c.sized(n)?)
        }
        BINUNICODE => {
            let n = c.u32()? as u64;
            Arg::Utf8(c.sized(n)?)
        }
        BINUNICODE8 => {
            let n = c.u64()?;
            Arg::Utf8(c.sized(n)?)
        }
        SHORT_BINBYTES => {
            let n = c.u8()? as u64;
            Arg::Bytes(c.sized(n)?)
        }
        BINBYTES => {
            let n = c.u32()? as u64;
            Arg::Bytes(c.sized(n)?)
        }
        BINBYTES8 | BYTEARRAY8 => {
            let n = c.u64()?;
            Arg::Bytes(c.sized(n)?)
        }
        SHORT_BINSTRING => {
            let n = c.u8()? as u64;
            Arg::Latin1(c.sized(n)?)
        }
        BINSTRING => {
            let n = i32::from_le_bytes(c.fixed()?);
            if n < 0 {
                return Err(c.fail(format!("negative length {n}")));
            }
            Arg::Latin1(c.sized(n as u64)?)
        }
        GLOBAL => {
            let module = c.line()?;
            let name = c.line()?;
            Arg::Global(module, name)
        }
        PERSID => Arg::Utf8(c.line()?),
        BINPUT | BINGET => Arg::Id(c.u8()? as u64),
        LONG_BINPUT | LONG_BINGET => Arg::Id(c.u32()? as u64),
        PUT | GET => {
            let s = c.line_str()?;
            Arg::Id(
                s.trim()
                    .parse()
                    .map_err(|_| c.fail(format!("`{s}` is not a memo key")))?,
            )
        }
        MARK | STOP | POP | POP_MARK | DUP | NONE | BINPERSID | REDUCE | APPEND | BUILD | DICT
        | EMPTY_DICT | APPENDS | LIST | EMPTY_LIST | SETITEM | TUPLE | EMPTY_TUPLE | SETITEMS
        | NEWOBJ | TUPLE1 | TUPLE2 | TUPLE3 | NEWTRUE | NEWFALSE | EMPTY_SET | ADDITEMS
        | FROZENSET | NEWOBJ_EX | STACK_GLOBAL | MEMOIZE => Arg::None,
        STRING | UNICODE | INST | OBJ | EXT1 | EXT2 | EXT4 | NEXT_BUFFER | READONLY_BUFFER => {
            return Err(c.fail(
                "opcode not supported by quill's unpickler (not used by torch.save or pickle.dump protocol 2-5)",
            ))
        }
        _ => return Err(c.fail(format!("unknown opcode 0x{op:02x}"))),
    };
    *pos = c.pos;
    Ok(Instr {
        pos: start,
        op,
        arg,
    })
}
