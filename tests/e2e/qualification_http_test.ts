/** The OTA end-to-end qualification cases over the HTTP data plane (see qualification_cases.ts). */
import { registerCases } from "./qualification_cases.ts";

registerCases("HTTP");
