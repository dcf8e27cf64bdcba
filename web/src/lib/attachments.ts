// Files in messages, the browser's side (PROTOCOL.md §5.3): resumable uploads with the
// tus protocol (tus-js-client), describing images (size and a small thumbnail, made
// here: the server never decodes images), and what a message's files look like to the UI.

import { Upload } from 'tus-js-client';
import { FILE_LIMITS, type FileRef, type ImageInfo } from './generated/protocol';
import { toBase64 } from './e2e';

/** A file of a message as the UI shows it. */
export interface ShownFile {
  id: string;
  name: string;
  size: number;
  mediaType: string;
  image: ImageInfo | null;
  /** For a file of an end-to-end encrypted message: its key and the digest of its bytes. */
  sealed: { key: Uint8Array<ArrayBuffer>; digest: Uint8Array<ArrayBuffer> } | null;
}

/** The progress of one file of a message being sent. */
export interface UploadState {
  name: string;
  sent: number;
  total: number;
}

/** Image types a browser shows inline (SVG never: it can carry scripts). */
const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif']);

/** Whether a file is shown as an image rather than as a card. */
export function isInlineImage(f: { mediaType: string; image: ImageInfo | null }): boolean {
  return f.image !== null && INLINE_IMAGES.has(f.mediaType);
}

export function shownFromRef(f: FileRef): ShownFile {
  return { id: f.id, name: f.name, size: f.size, mediaType: f.media_type, image: f.image, sealed: null };
}

/** A name the protocol accepts: no control characters, at most `max_file_name` bytes. */
export function fileName(raw: string): string {
  // eslint-disable-next-line no-control-regex
  let name = raw.replace(/[\u0000-\u001f\u007f]/g, '').replace(/[/\\]/g, '_').trim() || 'file';
  const encoder = new TextEncoder();
  while (encoder.encode(name).length > FILE_LIMITS.max_file_name) name = [...name].slice(0, -1).join('');
  return name;
}

/** A media type the protocol accepts (`type/subtype`), else `application/octet-stream`. */
export function mediaType(raw: string): string {
  const essence = raw.split(';')[0].trim().toLowerCase();
  return /^[a-z0-9!#$&^_.+-]{1,63}\/[a-z0-9!#$&^_.+-]{1,63}$/.test(essence) &&
    essence.length <= FILE_LIMITS.max_media_type
    ? essence
    : 'application/octet-stream';
}

/** "1.2 MB" and the like. */
export function formatSize(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit += 1;
  } while (value >= 1000 && unit < units.length - 1);
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/**
 * For an image the browser can decode: its size in pixels and a JPEG thumbnail of at
 * most `max_thumbnail` bytes. `null` for anything else.
 */
export async function describeImage(file: Blob): Promise<ImageInfo | null> {
  if (!INLINE_IMAGES.has(file.type)) return null;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null;
  }
  const { width, height } = bitmap;
  if (width < 1 || height < 1) return null;
  let thumbnail: string | null = null;
  try {
    for (const side of [96, 64, 40]) {
      const scale = Math.min(1, side / Math.max(width, height));
      const w = Math.max(1, Math.round(width * scale));
      const h = Math.max(1, Math.round(height * scale));
      const canvas = document.createElement('canvas');
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d');
      if (!ctx) break;
      // JPEG has no transparency: what is transparent shows on white.
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, w, h);
      ctx.drawImage(bitmap, 0, 0, w, h);
      for (const quality of [0.7, 0.5, 0.35]) {
        const blob = await new Promise<Blob | null>((resolve) => canvas.toBlob(resolve, 'image/jpeg', quality));
        if (blob && blob.size <= FILE_LIMITS.max_thumbnail) {
          thumbnail = toBase64(new Uint8Array(await blob.arrayBuffer()));
          break;
        }
      }
      if (thumbnail) break;
    }
  } finally {
    bitmap.close();
  }
  return { width, height, thumbnail };
}

/** An upload under way: resolves to the file's id; `cancel` ends it on the server too. */
export interface Uploading {
  done: Promise<string>;
  cancel(): Promise<void>;
}

export interface UploadOptions {
  /** `POST` endpoint of the tus server (`/api/uploads`). */
  endpoint: string;
  /** A valid access token. */
  token: () => Promise<string>;
  /** tus `Upload-Metadata` (`filename`, `filetype`); none for a sealed file. */
  metadata: Record<string, string>;
  onProgress: (sent: number, total: number) => void;
  /**
   * Remember the upload in this browser so that a new attempt with the same file
   * (after a reload) goes on where it stopped. Not for sealed files: their bytes differ
   * on every attempt.
   */
  remember: boolean;
  /** Bytes per `PATCH` request. */
  chunkSize?: number;
}

/** Waits after a failed request before trying again; the last delay repeats a while. */
const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000, 15000];

/**
 * Uploads `data` with the tus protocol: after a dropped connection (or a server that
 * restarts) it asks where the upload stands and goes on from there, so a reconnect
 * resumes rather than restarts it.
 */
export function startUpload(data: Blob, opts: UploadOptions): Uploading {
  let upload: Upload | null = null;
  const done = new Promise<string>((resolve, reject) => {
    upload = new Upload(data, {
      endpoint: opts.endpoint,
      metadata: opts.metadata,
      chunkSize: opts.chunkSize ?? 8 * 1024 * 1024,
      retryDelays: RETRY_DELAYS,
      storeFingerprintForResuming: opts.remember,
      removeFingerprintOnSuccess: true,
      onBeforeRequest: async (req) => {
        req.setHeader('Authorization', `Bearer ${await opts.token()}`);
      },
      onShouldRetry: (err) => {
        const status = err.originalResponse?.getStatus() ?? 0;
        // Network failures, the server's own troubles, a conflict about the offset and
        // an expired token (the next request fetches a new one) are worth another try.
        return status === 0 || status >= 500 || status === 409 || status === 423 || status === 401;
      },
      onProgress: (sent, total) => opts.onProgress(sent, total),
      onSuccess: () => {
        const id = upload?.url?.split('/').pop();
        if (id) resolve(id);
        else reject(new Error('The server did not name the upload.'));
      },
      onError: (e) => reject(new Error(uploadError(e))),
    });
    const u = upload;
    if (opts.remember) {
      void u
        .findPreviousUploads()
        .then((previous) => {
          if (previous.length > 0) u.resumeFromPreviousUpload(previous[0]);
        })
        .catch(() => {})
        .finally(() => u.start());
    } else {
      u.start();
    }
  });
  return {
    done,
    cancel: async () => {
      await (upload as Upload | null)?.abort(true).catch(() => {});
    },
  };
}

/** The server's reason for a failed upload, in words. */
function uploadError(e: Error): string {
  const response = (e as { originalResponse?: { getStatus(): number; getBody(): string } }).originalResponse;
  if (!response) return 'The upload failed: the server cannot be reached.';
  try {
    const body = JSON.parse(response.getBody()) as { error?: { message?: string } };
    if (body.error?.message) return `The upload failed: ${body.error.message}.`;
  } catch {
    // Not our JSON error.
  }
  return `The upload failed (${response.getStatus()}).`;
}
