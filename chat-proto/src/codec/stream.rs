//! Length-delimited postcard frames on a byte stream (QUIC), PROTOCOL.md §4.1.
//!
//! Each frame is a 4-byte big-endian length `N` followed by `N` bytes of postcard. The
//! length is checked against the limit before any buffer grows, so a peer announcing
//! 4 GiB costs nothing but an error.

use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};

use super::{PREFIX_LEN, decode_postcard};
use crate::error::DecodeError;
use crate::frame::Frame;

/// Incremental, sans-IO decoder of length-delimited frames of type `F`.
///
/// Feed it whatever bytes arrived, in any chunking; it yields frames as they complete.
/// A frame whose content is invalid yields `Ok(Some(Err(_)))` and the stream stays in
/// sync; an oversized length prefix yields `Err(_)`, after which the stream cannot
/// continue.
#[derive(Debug)]
pub struct StreamDecoder<F> {
    max: usize,
    _frame: PhantomData<fn() -> F>,
}

impl<F: Frame> Default for StreamDecoder<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Frame> StreamDecoder<F> {
    /// A decoder with the direction's limit.
    pub fn new() -> Self {
        Self {
            max: F::MAX_POSTCARD,
            _frame: PhantomData,
        }
    }

    /// Splits the next complete frame's payload off `src`, if one is there.
    pub fn next_payload(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            return Err(DecodeError::TooLarge {
                len: len as u64,
                max: self.max,
            });
        }
        let total = PREFIX_LEN + len;
        if src.len() < total {
            // Grow once to the announced size (already bounded above).
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        Ok(Some(src.split_to(len).freeze()))
    }

    /// Decodes the next complete frame from `src`, if one is there.
    #[allow(clippy::type_complexity)]
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Result<F, DecodeError>>, DecodeError> {
        Ok(self
            .next_payload(src)?
            .map(|payload| decode_postcard(&payload)))
    }

    /// Checks that no partial frame is left when the stream ends.
    pub fn finish(&self, src: &BytesMut) -> Result<(), DecodeError> {
        if src.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

#[cfg(feature = "codec")]
mod tokio_codec {
    use std::marker::PhantomData;

    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    use super::StreamDecoder;
    use crate::codec::encode_postcard;
    use crate::error::{DecodeError, EncodeError};
    use crate::frame::Frame;

    /// A stream-fatal failure of [`PostcardCodec`].
    #[derive(Debug, thiserror::Error)]
    pub enum CodecError {
        /// The underlying IO failed.
        #[error(transparent)]
        Io(#[from] std::io::Error),
        /// The stream is out of sync (oversized prefix, or truncated at end of stream).
        #[error(transparent)]
        Decode(#[from] DecodeError),
        /// An outgoing frame could not be encoded.
        #[error(transparent)]
        Encode(#[from] EncodeError),
    }

    /// tokio-util codec for length-delimited postcard frames: decodes `In`, encodes
    /// `Out` (a client uses `PostcardCodec<ServerFrame, ClientFrame>`, a server the
    /// reverse).
    ///
    /// Items are `Result<In, DecodeError>`: one bad frame is reported without ending the
    /// stream, while an oversized length prefix ends it with [`CodecError::Decode`].
    #[derive(Debug)]
    pub struct PostcardCodec<In, Out> {
        inner: StreamDecoder<In>,
        _out: PhantomData<fn(Out)>,
    }

    impl<In: Frame, Out: Frame> Default for PostcardCodec<In, Out> {
        fn default() -> Self {
            Self {
                inner: StreamDecoder::new(),
                _out: PhantomData,
            }
        }
    }

    impl<In: Frame, Out: Frame> PostcardCodec<In, Out> {
        /// A codec with the protocol's limits.
        pub fn new() -> Self {
            Self::default()
        }
    }

    impl<In: Frame, Out: Frame> Decoder for PostcardCodec<In, Out> {
        type Item = Result<In, DecodeError>;
        type Error = CodecError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
            Ok(self.inner.decode(src)?)
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
            match self.decode(src)? {
                Some(item) => Ok(Some(item)),
                None => {
                    self.inner.finish(src)?;
                    Ok(None)
                }
            }
        }
    }

    impl<In: Frame, Out: Frame> Encoder<&Out> for PostcardCodec<In, Out> {
        type Error = CodecError;

        fn encode(&mut self, item: &Out, dst: &mut BytesMut) -> Result<(), CodecError> {
            let frame = encode_postcard(item)?;
            dst.extend_from_slice(&frame.length_delimited());
            Ok(())
        }
    }
}

#[cfg(feature = "codec")]
pub use tokio_codec::{CodecError, PostcardCodec};
