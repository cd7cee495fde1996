// The error an image import fails with: its message is the sentence the image's state_reason shows.
// In a file of its own so the import's parts (download, URL guard) share it without import cycles.
export class ImportError extends Error {}
