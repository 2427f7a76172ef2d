//! A Python binary file-like object as a `std::io::Read`.

use std::{
    io::{self, Read},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
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
    gate: Gate,
}

impl PyReader {
    /// The reader, the slot for the exception its `read()` may raise, and
    /// its gate, to [`Gate::close`] before the call that started the
    /// transfer returns to Python.
    pub fn new(file: Py<PyAny>) -> (Self, Raised, Gate) {
        let raised = Raised::default();
        let gate = Gate::default();
        let reader =
            Self { file, pending: Vec::new(), offset: 0, done: false, raised: raised.clone(), gate: gate.clone() };
        (reader, raised, gate)
    }

    /// Reads the next chunk into `pending`; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        let Some(_inside) = self.gate.enter() else {
            return Err(io::Error::other("the upload was stopped"));
        };
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

/// Keeps the threads that read for a transfer out of Python once the call
/// that started it is over. A transfer stopped by Ctrl-C or its cancel
/// token leaves the reading thread inside `read()` for a moment; were the
/// program to end meanwhile, CPython would end that thread as it takes the
/// GIL back, and ending a thread of the host that way aborts the process.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    inside: bool,
    closed: bool,
}

/// A thread inside Python for the gate's transfer; leaves on drop.
struct Inside(Gate);

impl Gate {
    /// Enters, unless the gate is closed.
    fn enter(&self) -> Option<Inside> {
        let mut state = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return None;
        }
        state.inside = true;
        Some(Inside(self.clone()))
    }

    /// Lets no thread in any more and waits, at most `limit`, for the one
    /// inside (if any) to come out. The GIL must not be held: that thread
    /// needs it to finish.
    pub fn close(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let (lock, left) = &*self.0;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        state.closed = true;
        while state.inside {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else { return };
            state = left.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let (lock, left) = &*self.0 .0;
        lock.lock().unwrap_or_else(|p| p.into_inner()).inside = false;
        left.notify_all();
    }
}
