import t from 'tap'
import { redactSecrets, redactUrl } from '../../src/redact.js'

t.test('a URL is logged with its password masked, and only the password', async (t) => {
  t.equal(redactUrl('mqtt://gw:S3cret@broker:1883'), 'mqtt://gw:****@broker:1883')
  t.equal(redactUrl('postgres://tether:p%40ss@db:5432/tether?sslmode=require'), 'postgres://tether:****@db:5432/tether?sslmode=require')
  t.equal(redactUrl('mqtt://broker:1883'), 'mqtt://broker:1883', 'no password: unchanged')
  t.equal(redactUrl('not a url //user:pw@host'), 'not a url //****', 'text that is not a URL is masked past its scheme')
})

t.test('credentials quoted in a model server\'s error are cut before the error is logged', async (t) => {
  const text = 'Incorrect API key provided: sk-proj1234567890abcdef. Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc at http://10.0.0.5:8000?api_key=hunter22&x=1'
  const out = redactSecrets(text)
  t.notMatch(out, /1234567890abcdef|eyJhbGciOiJIUzI1NiJ9|hunter22/)
  t.match(out, /sk-pr\*\*\*\*/, 'enough is left to recognise which key')
  t.match(out, /http:\/\/10\.0\.0\.5:8000/, 'the rest of the message is kept')
})
