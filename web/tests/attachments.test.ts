import { describe, expect, it } from 'vitest';
import { fileName, formatSize, isInlineImage, mediaType } from '../src/lib/attachments';
import { FILE_LIMITS } from '../src/lib/protocol';

describe('describing files to send', () => {
  it('names are what the protocol accepts: no control characters or paths, at most 255 bytes', () => {
    expect(fileName('report.pdf')).toBe('report.pdf');
    expect(fileName('a\u0000b\nc.txt')).toBe('abc.txt');
    expect(fileName('../etc/passwd')).toBe('.._etc_passwd');
    expect(fileName('\u0007')).toBe('file');
    const long = fileName('é'.repeat(300));
    expect(new TextEncoder().encode(long).length).toBeLessThanOrEqual(FILE_LIMITS.max_file_name);
    expect(long).toBe('é'.repeat(127));
  });

  it('media types are type/subtype or application/octet-stream', () => {
    expect(mediaType('image/PNG')).toBe('image/png');
    expect(mediaType('text/plain; charset=utf-8')).toBe('text/plain');
    expect(mediaType('')).toBe('application/octet-stream');
    expect(mediaType('text/html\r\nx: y')).toBe('application/octet-stream');
  });

  it('sizes read as people expect', () => {
    expect([999, 1000, 123456, 4_500_000, 1e12].map(formatSize)).toEqual(['999 B', '1.0 kB', '123 kB', '4.5 MB', '1.0 TB']);
  });

  it('only raster images with a description show inline, never SVG', () => {
    const image = { width: 1, height: 1, thumbnail: null };
    expect(isInlineImage({ mediaType: 'image/png', image })).toBe(true);
    expect(isInlineImage({ mediaType: 'image/svg+xml', image })).toBe(false);
    expect(isInlineImage({ mediaType: 'image/png', image: null })).toBe(false);
  });
});
