import mqtt from 'mqtt'
const t0 = Date.now()
const at = () => `${((Date.now() - t0) / 1000).toFixed(2)}s`
const url = (i: number) => `mqtt://127.0.0.1:1622${i}`
const opts = (id: string) => ({ clientId: id, protocolVersion: 4 as const, reconnectPeriod: 0, connectTimeout: 5000, clean: true })
const phase = process.argv[2]
const retry = async (u: string, id: string) => await new Promise<mqtt.MqttClient>((resolve) => { const c = mqtt.connect(u, { ...opts(id), reconnectPeriod: 1000 }); c.on('close', () => console.log(at(), 'close', id)); c.once('connect', () => { c.options.reconnectPeriod = 0; resolve(c) }) })
if (phase === 'a') {
  const gw = await retry(url(0), 'gw-1')
  await gw.subscribeAsync('llm/chat/reply/gw-1', { qos: 1 })
  console.log(at(), 'subscribed on n0'); gw.end(true)
  const g2 = await retry(url(1), 'gw-2'); await g2.subscribeAsync('x/y', { qos: 1 }); g2.end(true); console.log(at(),'gw-2 on n1')
} else {
  const n = Number(process.argv[3])
  const p = mqtt.connect(url(n), opts(process.argv[4] ?? 'gw-1'))
  p.on('connect', async () => { console.log(at(), 'connected'); const r = await Promise.race([p.subscribeAsync('llm/chat/reply/gw-1', { qos: 1 }), new Promise(r => setTimeout(() => r('timeout'), 8000))]); console.log(at(), 'sub', JSON.stringify(r)); p.end(true) })
  p.on('error', (e) => { console.log(at(), 'error', e.message) })
  p.on('close', () => { console.log(at(), 'close') })
  setTimeout(() => { console.log(at(), 'giving up'); p.end(true); process.exit(0) }, 12000)
}
