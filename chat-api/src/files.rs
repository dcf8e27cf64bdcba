//! Files: resumable uploads by the tus 1.0.0 protocol (core, creation, termination and
//! expiration; <https://tus.io/protocols/resumable-upload>) and downloads. Uploads carry
//! raw bytes and their state travels in headers, so these endpoints have no JSON
//! bodies; the header names and values they use are the constants below.

crate::endpoints! {
    /// `OPTIONS /api/uploads`: the tus versions, extensions and largest size served
    /// (204, no token needed).
    UploadOptions: OPTIONS "/api/uploads", () => ();
    /// `POST /api/uploads`: creates an upload of `Upload-Length` bytes with optional
    /// `Upload-Metadata` (`filename`, `filetype`); 201 with its URL in `Location`.
    CreateUpload: POST "/api/uploads", () => ();
    /// `HEAD /api/uploads/{id}`: how many bytes are stored (`Upload-Offset`), for the
    /// uploader only.
    UploadStatus: HEAD "/api/uploads/{id}", () => ();
    /// `PATCH /api/uploads/{id}`: appends the body (`application/offset+octet-stream`)
    /// at `Upload-Offset`; 204 with the new offset.
    AppendUpload: PATCH "/api/uploads/{id}", () => ();
    /// `DELETE /api/uploads/{id}`: ends an upload and deletes its bytes (204).
    EndUpload: DELETE "/api/uploads/{id}", () => ();
    /// `GET /api/files/{id}`: a finished upload's bytes, with `Range` support.
    Download: GET "/api/files/{id}", () => ();
}

/// The tus protocol version served (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions served (`Tus-Extension`).
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration";
/// The media type of a `PATCH` body.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
