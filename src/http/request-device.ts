// The device a request was authenticated as, remembered on the request so that what happens to
// it later (an unexpected 500 reported to Sentry) can say whose request it was. Routes call
// rememberDevice() right after authentication; a request that never authenticated has none.
import type { FastifyRequest } from 'fastify';

export interface RequestDevice {
  userId: string;
  deviceId: string;
}

const devices = new WeakMap<FastifyRequest, RequestDevice>();

export function rememberDevice(request: FastifyRequest, device: RequestDevice): void {
  devices.set(request, { userId: device.userId, deviceId: device.deviceId });
}

export function requestDevice(request: FastifyRequest): RequestDevice | undefined {
  return devices.get(request);
}
