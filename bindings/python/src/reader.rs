//! A Python binary file-like object as a `std::io::Read`.

use std::{
    io::{self, Read},
    sync::{Arc, Mutex},
};

use pyo3::{
    prelude::*,
    types::{PyByteArray, PyBytes},
};

/// How much is asked of `read(n)` at a time: few enough calls that taking
/// the GIL for each costs nothing, little enough memory to stay bounded.
const CHUNK: usize = 1 << 20;

/// The Python exception a `read()` raised, kept so that the caller gets it
/// back instead of the plugin's account of a failed source.
pub type Raised = Arc<Mutex<Option<PyErr>>>;

/// Calls the object's `read(CHUNK)` from whatever thread the plugin reads
/// on, holding the GIL only for that call and the copy; the bytes handed
/// out but not yet asked for wait in `pending`.
pub struct PyReader {
    file: Py<PyAny>,
    pending: Vec<u8>,
    offset: usize,
    done: bool,
    raised: Raised,
}

impl PyReader {
    pub fn new(file: Py<PyAny>) -> (Self, Raised) {
        let raised = Raised::default();
        (Self { file, pending: Vec::new(), offset: 0, done: false, raised: raised.clone() }, raised)
    }

    /// Reads the next chunk into `pending`; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        let got = Python::try_attach(|py| -> Result<Option<Vec<u8>>, PyErr> {
            let data = self.file.bind(py).call_method1("read", (CHUNK,))?;
            if data.is_none() {
                return Err(pyo3::exceptions::PyBlockingIOError::new_err(
                    "the upload source's read() returned None (a non-blocking stream with no data ready)",
                ));
            }
            let bytes = if let Ok(b) = data.cast::<PyBytes>() {
                b.as_bytes().to_vec()
            } else if let Ok(b) = data.cast::<PyByteArray>() {
                b.to_vec()
            } else if data.is_instance_of::<pyo3::types::PyString>() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "the upload source's read() returned str: open the file in binary mode ('rb')",
                ));
            } else {
                // memoryview and other buffers
                py.import("builtins")?.getattr("bytes")?.call1((data,))?.cast_into::<PyBytes>()?.as_bytes().to_vec()
            };
            Ok(if bytes.is_empty() { None } else { Some(bytes) })
        });
        match got {
            None => Err(io::Error::other("the Python interpreter is shutting down")),
            Some(Err(e)) => {
                let text = Python::try_attach(|py| {
                    e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "an exception".into())
                })
                .unwrap_or_default();
                *self.raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(io::Error::other(format!("the upload source's read() raised {text}")))
            }
            Some(Ok(None)) => Ok(false),
            Some(Ok(Some(bytes))) => {
                self.pending = bytes;
                self.offset = 0;
                Ok(true)
            }
        }
    }
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.offset >= self.pending.len() && (self.done || !self.fill()?) {
            self.done = true;
            return Ok(0);
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}
