/**
 * PSA status codes (PSA Certified Firmware Update API 1.0, plus the 0.7 codes it still useful
 * for reasons), shared by the bootloader's failure records and the firmware-update service.
 *
 * @module
 */

/** `psa_status_t` values. */
export const PsaStatus = {
  SUCCESS: 0,
  SUCCESS_REBOOT: 1,
  SUCCESS_RESTART: 2,
  ERROR_NOT_PERMITTED: -133,
  ERROR_NOT_SUPPORTED: -134,
  ERROR_INVALID_ARGUMENT: -135,
  ERROR_BAD_STATE: -137,
  ERROR_DOES_NOT_EXIST: -140,
  ERROR_INSUFFICIENT_MEMORY: -141,
  ERROR_INSUFFICIENT_STORAGE: -142,
  ERROR_COMMUNICATION_FAILURE: -145,
  ERROR_STORAGE_FAILURE: -146,
  ERROR_INVALID_SIGNATURE: -149,
  ERROR_DATA_INVALID: -153,
  ERROR_DEPENDENCY_NEEDED: -156,
  ERROR_INSTALL_INTERRUPTED: -159,
  ERROR_FLASH_ABUSE: -160,
  ERROR_INSUFFICIENT_POWER: -161,
} as const;

/** A PSA status value. */
export type PsaStatusCode = typeof PsaStatus[keyof typeof PsaStatus];

/**
 * Name of a status code, for logs.
 *
 * @example
 * ```ts
 * import { psaStatusName } from "./psa_status.ts";
 * psaStatusName(-137); // "PSA_ERROR_BAD_STATE"
 * ```
 */
export function psaStatusName(code: number): string {
  for (const [name, value] of Object.entries(PsaStatus)) if (value === code) return `PSA_${name}`;
  return `PSA status ${code}`;
}
