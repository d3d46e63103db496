/**
 * The Retry-After a chat gets when the link drops under it is read while the link tells of
 * the loss: the retry must already be scheduled then, or every such chat is told "1 s" however
 * far away the next attempt is (and all of them retry at once, to be refused again).
 */
import t from 'tap'
import { createMqttLink } from '../../src/mqtt/mqtt-link.js'
import { startTestBroker } from '../fixtures/broker.js'
import { testLinkOptions } from '../fixtures/test-link.js'
import { waitFor } from '../fixtures/wait-for.js'

t.test('when the link drops, Retry-After read by those told of it is the time to the scheduled attempt', async (t) => {
  const broker = await startTestBroker()
  t.teardown(() => broker.close())
  // Full jitter drawn at its top: the first retry waits just under 4 s.
  const link = createMqttLink(testLinkOptions(broker.url, { backoffBaseMs: 4000, backoffCapMs: 4000, random: () => 0.99 }))
  link.start()
  t.teardown(() => link.stop())
  await waitFor(() => link.isUp, { what: 'link up' })
  const told: number[] = []
  link.events.on('down', () => { told.push(link.retryAfterS()) })
  await broker.kill()
  await waitFor(() => told.length > 0, { what: 'the loss told' })
  t.equal(told[0], 4, 'ceil(3.96 s): the attempt the link has scheduled, not 1')
})
