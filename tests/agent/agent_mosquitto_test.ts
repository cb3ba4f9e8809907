/** The happy update against mosquitto: the agent depends on no aedes behaviour. */
import { MOSQUITTO, startMosquitto } from "../helpers/mosquitto.ts";
import { happyUpdate, rig } from "../helpers/agent_rig.ts";

Deno.test({
  name: "agent e2e (mosquitto): a happy update against a broker that is not aedes",
  ignore: MOSQUITTO.ignore,
}, async () => {
  const mosquitto = await startMosquitto();
  try {
    const r = await rig({ brokerUrl: mosquitto.url });
    try {
      await happyUpdate(r);
    } finally {
      await r.close();
    }
  } finally {
    await mosquitto.stop();
  }
});
