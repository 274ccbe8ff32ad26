/** `buf` cut at the given offsets (any order, repeats and offsets outside 1…length-1 ignored): segmentation for tests. */
export function splitAt(buf: Buffer, offsets: number[]): Buffer[] {
  const at = [...new Set(offsets.filter((c) => c > 0 && c < buf.length))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const c of at) {
    out.push(buf.subarray(from, c));
    from = c;
  }
  out.push(buf.subarray(from));
  return out;
}
