//! What a session asked for ([`Submit`]), turned into the ring driver's SQEs on its socket.

use ringd_ring::{Sqe, Target};

use super::op::{Op, Token};
use super::sock::Submit;
use super::{Worker, BGID};

impl Worker {
    /// Pushes the SQEs of a socket operation on `target` (`token` names the socket).
    pub(super) fn push_socket_op(&mut self, sub: Submit, token: Token, target: Target) {
        match sub {
            Submit::Recv { room, .. } => {
                // 0 would mean no cap: a connection with no room left reads one buffer.
                let cap = self.driver.features().recv_total_limit;
                let room = cap.then(|| u32::try_from(room).unwrap_or(u32::MAX).max(1));
                self.driver
                    .push(Sqe::recv_multi(target, BGID, room, Op::Recv(token)));
            }
            Submit::Send { buf, fin, .. } => {
                // A short send is no error on a stream socket and would not break a link;
                // with MSG_WAITALL the kernel retries until all is sent, or fails the send
                // and with it the link. So the FIN linked behind a last send follows its
                // last byte, in the same submission, as the origin's reply-then-close did,
                // and never runs early.
                let flags = match fin {
                    true => libc::MSG_NOSIGNAL | libc::MSG_WAITALL,
                    false => libc::MSG_NOSIGNAL,
                };
                let send = self.driver.send(target, buf, flags, Op::Send(token));
                match fin {
                    true => {
                        let shutdown = Sqe::shutdown(target, libc::SHUT_WR, Op::Fin(token));
                        self.driver.push_chain([send.link(), shutdown]);
                    }
                    false => self.driver.push(send),
                }
            }
            Submit::Fin(_) => {
                let sqe = Sqe::shutdown(target, libc::SHUT_WR, Op::Fin(token));
                self.driver.push(sqe);
            }
            Submit::CancelRecv(_) => {
                let sqe = Sqe::cancel(Op::Recv(token), Op::Cancel(token));
                self.driver.push(sqe);
            }
            // The connect owns its address, so it is not found by its `user_data`; nothing
            // else is in flight on a socket that is still connecting.
            Submit::CancelAll(_) | Submit::CancelConnect => {
                self.driver.push(Sqe::cancel_fd(target, Op::Cancel(token)));
            }
            // The worker handles these itself (they change its table).
            Submit::Close { .. } | Submit::Connect => {
                tracing::warn!("{sub:?} is not a socket operation")
            }
        }
    }
}
