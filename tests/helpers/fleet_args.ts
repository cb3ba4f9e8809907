/**
 * The flags of a small, quick fleet run: `devices` devices in two Workers, a 16 KiB image in
 * 1 KiB blocks.
 */
export function smallFleetArgs(devices: number): string[] {
  return [
    "--devices",
    String(devices),
    "--workers",
    "2",
    "--image-size",
    "16KiB",
    "--block-size",
    "1KiB",
  ];
}
