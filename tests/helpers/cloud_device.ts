/** A factory-fresh device on 1.0.0 with its agent, pointed at a broker (end-to-end cloud tests). */
import { DeviceRuntime, type DeviceRuntimeOptions } from "../../agent/device_runtime.ts";
import { AGENT_TEST_CONFIG } from "./agent_rig.ts";
import { factoryDevice, smallLayout } from "./pki.ts";

/**
 * Builds (does not start) the runtime of a 24-sector-slot device on real time, running the factory
 * image 1.0.0 with security counter 1.
 */
export async function cloudDevice(
  options: Omit<DeviceRuntimeOptions, "device" | "agentConfig"> & {
    readonly seed: number;
    readonly agentConfig?: DeviceRuntimeOptions["agentConfig"];
  },
): Promise<DeviceRuntime> {
  const { seed, agentConfig, ...runtime } = options;
  const { device } = await factoryDevice({
    layout: smallLayout(24),
    systemTime: true,
    factory: { version: "1.0.0", securityCounter: 1 },
    seed,
  });
  return new DeviceRuntime({ ...runtime, device, agentConfig: agentConfig ?? AGENT_TEST_CONFIG });
}
