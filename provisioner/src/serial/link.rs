//! The station's end of a serial line: a TCP address (a serial-to-network fixture, or a device
//! simulator) or a tty device path (a USB-serial adapter, or a pty in tests) put in raw mode.
//! Every read waits at most the link's timeout, so a silent device cannot hang a worker.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::termios::{OptionalActions, QueueSelector, tcflush, tcgetattr, tcsetattr};

/// An open line to one device.
pub enum Link {
    /// Over TCP.
    Tcp(TcpStream),
    /// A tty in raw mode, with its read timeout.
    Tty(File, Duration),
}

impl Link {
    /// Opens `address`: a path starting with `/` is a tty, anything else `host:port`.
    pub fn open(address: &str, timeout: Duration) -> io::Result<Self> {
        if address.starts_with('/') {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(address)?;
            // Raw: no echo, no line editing, no CR/LF translation of the binary frames.
            let mut t = tcgetattr(&file)?;
            t.make_raw();
            tcsetattr(&file, OptionalActions::Now, &t)?;
            // A late answer to a request that timed out must not pass for the next answer.
            tcflush(&file, QueueSelector::IFlush)?;
            return Ok(Self::Tty(file, timeout));
        }
        let addr = address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{address}` resolves to nothing"),
            )
        })?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self::Tcp(stream))
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Tty(f, timeout) => {
                let wait = Timespec {
                    tv_sec: timeout.as_secs() as _,
                    tv_nsec: timeout.subsec_nanos() as _,
                };
                let mut fds = [PollFd::new(&*f, PollFlags::IN)];
                if poll(&mut fds, Some(&wait))? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the device did not answer in time",
                    ));
                }
                f.read(buf)
            }
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Tty(f, _) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Tty(f, _) => f.flush(),
        }
    }
}
