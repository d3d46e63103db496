import mqtt from 'mqtt'
import { startNatsCluster } from './fixtures/process-brokers.js'
const t0 = Date.now()
const at = () => `${((Date.now() - t0) / 1000).toFixed(2)}s`
const cluster = await startNatsCluster(3)
console.log(at(), 'cluster up', cluster.urls)
const [a, b] = cluster.nodes
const opts = (id: string) => ({ clientId: id, protocolVersion: 4 as const, reconnectPeriod: 0, connectTimeout: 5000, clean: true })
let gw = await mqtt.connectAsync(a!.url, opts('gw-1'))
await gw.subscribeAsync('llm/chat/reply/gw-1', { qos: 1 })
const pub = await mqtt.connectAsync(b!.url, opts('pub-1'))
let got = 0
gw.on('message', () => { got++ })
await pub.publishAsync('llm/chat/reply/gw-1', 'x', { qos: 1 })
await new Promise(r => setTimeout(r, 300))
console.log(at(), 'got before', got)
await a!.kill()
console.log(at(), 'node0 killed')
gw.end(true)
for (let i = 0; i < 20; i++) {
  const s = Date.now()
  try {
    gw = await mqtt.connectAsync(b!.url, opts(process.env.SUFFIX ? `gw-1-${i}` : 'gw-1'))
    console.log(at(), 'connected in', Date.now() - s)
    const r = await Promise.race([gw.subscribeAsync('llm/chat/reply/gw-1', { qos: 1 }), new Promise(r => setTimeout(() => r('timeout'), 5000))])
    console.log(at(), 'subscribe', JSON.stringify(r))
    if (r !== 'timeout' && Array.isArray(r) && (r as any)[0].qos !== 128) { got = 0; gw.on('message', () => { got++ }); await pub.publishAsync('llm/chat/reply/gw-1', 'y', { qos: 1 }); await new Promise(r => setTimeout(r, 500)); console.log(at(), 'got after', got); break }
    gw.end(true)
  } catch (e) { console.log(at(), 'err', (e as Error).message) }
  await new Promise(r => setTimeout(r, 1000))
}
await pub.endAsync(true); gw.end(true)
await cluster.close()
