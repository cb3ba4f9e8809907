/**
 * Who may do what on the operator API, as data: three roles, each allowed what the one below it
 * is. A viewer reads; an operator also creates, pauses, resumes and cancels updates (and the jobs
 * and stream files they are made of); an admin also manages things, groups, signing profiles and
 * operator tokens. Reading the tokens is an admin's too (their names and roles say who can act).
 *
 * @example
 * ```ts
 * import { allows, requiredRole } from "./operator_roles.ts";
 * requiredRole("POST", ["ota-updates"]); // "operator"
 * allows("viewer", requiredRole("GET", ["jobs"])); // true
 * ```
 *
 * @module
 */

/** The roles, weakest first. */
export const OPERATOR_ROLES = ["viewer", "operator", "admin"] as const;
/** A role. */
export type OperatorRole = typeof OPERATOR_ROLES[number];

/** Resources whose changes are an operator's: updates and what they are made of. */
const OPERATOR_RESOURCES = new Set(["ota-updates", "jobs", "streams"]);
/** Resources an admin alone may even read. */
const ADMIN_READS = new Set(["tokens"]);

/**
 * The weakest role that may make `method` on the API path `parts` (the segments after `/api`).
 */
export function requiredRole(method: string, parts: readonly string[]): OperatorRole {
  const resource = parts[0] ?? "";
  if (method === "GET" || method === "HEAD") {
    return ADMIN_READS.has(resource) ? "admin" : "viewer";
  }
  return OPERATOR_RESOURCES.has(resource) ? "operator" : "admin";
}

/** Whether `role` may do what needs `needed`. */
export function allows(role: OperatorRole, needed: OperatorRole): boolean {
  return OPERATOR_ROLES.indexOf(role) >= OPERATOR_ROLES.indexOf(needed);
}

/** Whether `value` names a role. */
export function isOperatorRole(value: unknown): value is OperatorRole {
  return typeof value === "string" && (OPERATOR_ROLES as readonly string[]).includes(value);
}
